// Small DOM helpers shared by the pages: element builder, formats, badges, JSON tree, dialogs.
export const FINAL = new Set(["succeeded", "failed", "timed_out", "cancelled", "expired", "completed"]);
export const STATUSES = ["pending", "queued", "running", "retrying", "succeeded", "failed", "timed_out",
  "cancelled", "expired", "active", "paused", "completed"];

/** h("a", {href}, "text", child…): attributes starting with "on" become listeners. */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(element.dataset, value);
    else if (value === true) element.setAttribute(key, "");
    else element.setAttribute(key, value);
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
}

export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const date = new Date(iso);
  return h("time", { datetime: iso, title: date.toISOString() }, date.toLocaleString());
}

export function ago(iso) {
  if (!iso) return "—";
  const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
  if (Math.abs(seconds) < 60) return `${Math.round(seconds)} s`;
  if (Math.abs(seconds) < 3600) return `${Math.round(seconds / 60)} min`;
  return `${Math.round(seconds / 3600)} h`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

export function badge(status, attrs = {}) {
  return h("span", { class: `badge s-${status}`, ...attrs }, status.replace("_", " "));
}

/** A collapsible JSON tree built from <details>, so it works with the keyboard as it is. */
export function jsonTree(value, name = null, depth = 0) {
  const label = name === null ? [] : [h("span", { class: "key" }, name), ": "];
  if (value !== null && typeof value === "object") {
    const entries = Array.isArray(value) ? value.map((v, i) => [String(i), v]) : Object.entries(value);
    const summary = Array.isArray(value) ? `[${entries.length}]` : `{${entries.length}}`;
    return h("details", { class: "json", open: depth < 2 },
      h("summary", {}, ...label, h("span", { class: "muted" }, summary)),
      entries.map(([key, child]) => jsonTree(child, key, depth + 1)));
  }
  const kind = value === null ? "null" : typeof value;
  return h("div", { class: "json leaf" }, ...label, h("span", { class: `j-${kind}` }, JSON.stringify(value)));
}

export function toast(message, kind = "info") {
  const item = h("div", { class: `toast ${kind}` }, message);
  document.getElementById("toasts").append(item);
  setTimeout(() => item.remove(), 5000);
}

/** Resolves true when the user confirms. */
export function confirmAction(message, action = "Confirm") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = message;
  document.getElementById("confirm-ok").textContent = action;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
}

/** Runs fn now and every `ms` until `signal` aborts; waits while the tab is hidden. */
export function every(ms, fn, signal) {
  let timer = null;
  const tick = async () => {
    if (signal.aborted) return;
    if (!document.hidden) {
      try { await fn(); } catch (error) { if (error.name !== "AbortError") console.warn(error); }
    }
    if (!signal.aborted) timer = setTimeout(tick, ms);
  };
  signal.addEventListener("abort", () => clearTimeout(timer));
  tick();
}

export function table(headers, rows, attrs = {}) {
  return h("div", { class: "scroll" }, h("table", attrs,
    h("thead", {}, h("tr", {}, headers.map((title) => h("th", { scope: "col" }, title)))),
    h("tbody", {}, rows)));
}

export function field(label, input, hint = null) {
  const id = input.id || `f-${input.name}`;
  input.id = id;
  const error = h("p", { class: "field-error", id: `${id}-error`, "aria-live": "polite" });
  input.setAttribute("aria-describedby", `${id}-error`);
  return h("div", { class: "field", dataset: { field: input.name } }, h("label", { for: id }, label), input,
    hint ? h("p", { class: "hint" }, hint) : null, error);
}

export function errorText(error) {
  return error.field ? `${error.message} (field ${error.field})` : error.message;
}
