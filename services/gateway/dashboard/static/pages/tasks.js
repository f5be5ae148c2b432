// Tasks: filters kept in the URL, newest first, cursor pages, live rows, bulk cancel and delete.
import { api, query } from "../api.js";
import { STATUSES, FINAL, badge, confirmAction, duration, every, h, time, toast } from "../ui.js";

const FILTERS = ["status", "kind", "task_type", "name", "created_after", "created_before"];

function select(name, label, options, value) {
  return h("div", { class: "field" }, h("label", { for: `filter-${name}` }, label),
    h("select", { id: `filter-${name}`, name }, h("option", { value: "" }, "any"),
      options.map((option) => h("option", { value: option, selected: option === value }, option.replace("_", " ")))));
}

function localInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return new Date(date.getTime() - date.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
}

function filterForm(params) {
  const form = h("form", { class: "filters card", role: "search", "aria-label": "Filter tasks" },
    select("status", "Status", STATUSES, params.get("status")),
    select("kind", "Kind", ["code", "api"], params.get("kind")),
    select("task_type", "Trigger", ["immediate", "delayed", "scheduled"], params.get("task_type")),
    h("div", { class: "field" }, h("label", { for: "filter-name" }, "Name starts with"),
      h("input", { id: "filter-name", name: "name", type: "search", value: params.get("name") || "" })),
    h("div", { class: "field" }, h("label", { for: "filter-created_after" }, "Created after"),
      h("input", { id: "filter-created_after", name: "created_after", type: "datetime-local",
        value: localInput(params.get("created_after")) })),
    h("div", { class: "field" }, h("label", { for: "filter-created_before" }, "Created before"),
      h("input", { id: "filter-created_before", name: "created_before", type: "datetime-local",
        value: localInput(params.get("created_before")) })),
    h("div", { class: "field actions" }, h("button", { type: "submit" }, "Apply"),
      h("a", { href: "#/tasks", class: "button secondary" }, "Clear")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const values = {};
    for (const name of FILTERS) {
      let value = (data.get(name) || "").trim();
      if (value && name.startsWith("created_")) value = new Date(value).toISOString();
      values[name] = value;
    }
    values.limit = params.get("limit");
    window.location.hash = `#/tasks${query(values)}`;
  });
  form.addEventListener("change", (event) => {
    if (event.target.tagName === "SELECT") form.requestSubmit();
  });
  return form;
}

function row(task, selected) {
  return h("tr", { dataset: { id: task.id, status: task.status } },
    h("td", {}, h("input", { type: "checkbox", class: "pick", value: task.id, checked: selected.has(task.id),
      "aria-label": `Select ${task.name}` })),
    h("td", {}, h("a", { href: `#/tasks/${encodeURIComponent(task.id)}` }, task.name)),
    h("td", {}, badge(task.status)),
    h("td", { class: "hide-narrow" }, task.kind),
    h("td", { class: "hide-narrow" }, task.task_type),
    h("td", { class: "hide-narrow" }, time(task.created_at)),
    h("td", {}, duration(task.duration_ms)));
}

/** Replace only the rows whose task changed, so focus and selection elsewhere stay put. */
function patchRows(body, tasks, selected) {
  const shown = [...body.querySelectorAll("tr[data-id]")];
  if (!tasks.length) {
    body.replaceChildren(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No task matches.")));
    return;
  }
  if (shown.map((tr) => tr.dataset.id).join() !== tasks.map((task) => task.id).join()) {
    body.replaceChildren(...tasks.map((task) => row(task, selected)));
    return;
  }
  tasks.forEach((task, index) => {
    const fresh = row(task, selected);
    if (fresh.innerHTML !== shown[index].innerHTML) shown[index].replaceWith(fresh);
  });
}

export function render(root, { params, signal }) {
  const selected = new Set();
  const cursor = params.get("cursor");
  const previous = JSON.parse(sessionStorage.getItem("taskmesh.cursors") || "[]");
  const filters = Object.fromEntries(FILTERS.map((name) => [name, params.get(name)]));
  const limit = params.get("limit") || 50;
  const body = h("tbody", {}, h("tr", {}, h("td", { colspan: 7, class: "muted" }, "Loading…")));
  const all = h("input", { type: "checkbox", id: "pick-all", "aria-label": "Select every task on this page" });
  const info = h("span", { class: "muted", id: "selection", "aria-live": "polite" });
  const cancel = h("button", { type: "button", disabled: true, id: "bulk-cancel" }, "Cancel selected");
  const remove = h("button", { type: "button", disabled: true, class: "danger", id: "bulk-delete" }, "Delete selected");
  const pager = h("nav", { class: "row pager", "aria-label": "Pages" });
  const error = h("p", { class: "field-error", role: "alert" });
  let nextCursor = null;
  let drawn = "";

  const refreshSelection = () => {
    info.textContent = selected.size ? `${selected.size} selected` : "";
    cancel.disabled = remove.disabled = selected.size === 0;
  };
  body.addEventListener("change", (event) => {
    if (!event.target.classList.contains("pick")) return;
    if (event.target.checked) selected.add(event.target.value); else selected.delete(event.target.value);
    refreshSelection();
  });
  all.addEventListener("change", () => {
    for (const box of body.querySelectorAll(".pick")) {
      box.checked = all.checked;
      if (all.checked) selected.add(box.value); else selected.delete(box.value);
    }
    refreshSelection();
  });

  async function bulk(action) {
    const ids = [...selected];
    const verb = action === "cancel" ? "Cancel" : "Delete";
    const ok = await confirmAction(`${verb} ${ids.length} task${ids.length > 1 ? "s" : ""}?` +
      (action === "delete" ? " Their runs and logs are removed too; this cannot be undone." : ""), verb);
    if (!ok) return;
    const results = await Promise.allSettled(ids.map((id) => action === "cancel"
      ? api(`/api/tasks/${encodeURIComponent(id)}/cancel`, { method: "POST" })
      : api(`/api/tasks/${encodeURIComponent(id)}`, { method: "DELETE" })));
    const failed = results.filter((r) => r.status === "rejected");
    toast(`${verb}: ${ids.length - failed.length} done${failed.length ? `, ${failed.length} failed (${failed[0].reason.message})` : ""}`,
      failed.length ? "error" : "info");
    selected.clear();
    all.checked = false;
    refreshSelection();
    drawn = "";
    await load();
  }
  cancel.addEventListener("click", () => bulk("cancel"));
  remove.addEventListener("click", () => bulk("delete"));

  function go(nextValue, stack) {
    sessionStorage.setItem("taskmesh.cursors", JSON.stringify(stack));
    window.location.hash = `#/tasks${query({ ...filters, limit: params.get("limit"), cursor: nextValue })}`;
  }

  async function load() {
    try {
      const page = await api(`/api/tasks${query({ ...filters, limit, cursor })}`, { signal });
      error.textContent = "";
      nextCursor = page.next_cursor;
      const key = JSON.stringify(page);
      if (key === drawn) return page.tasks.some((task) => !FINAL.has(task.status));
      drawn = key;  // redrawing unchanged rows would take the keyboard focus away
      patchRows(body, page.tasks, selected);
      pager.replaceChildren(
        h("button", { type: "button", class: "secondary", disabled: !cursor, onclick: () => go(null, []) }, "First page"),
        h("button", { type: "button", class: "secondary", disabled: !cursor,
          onclick: () => go(previous[previous.length - 1] || null, previous.slice(0, -1)) }, "Previous"),
        h("button", { type: "button", id: "next-page", disabled: !nextCursor,
          onclick: () => go(nextCursor, [...previous, cursor].filter((c) => c !== undefined)) }, "Next"));
      return page.tasks.some((task) => !FINAL.has(task.status));
    } catch (problem) {
      if (problem.name !== "AbortError") error.textContent = problem.message;
      return false;
    }
  }

  root.append(h("h1", { tabindex: -1 }, "Tasks"), filterForm(params), error,
    h("div", { class: "row bulk" }, cancel, remove, info),
    h("div", { class: "scroll" }, h("table", { id: "task-table" },
      h("caption", { class: "visually-hidden" }, "Tasks, newest first"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, all), ["Name", "Status"].map((t) => h("th", { scope: "col" }, t)),
        ["Kind", "Trigger", "Created"].map((t) => h("th", { scope: "col", class: "hide-narrow" }, t)),
        h("th", { scope: "col" }, "Duration"))), body)),
    pager);
  // the visible rows follow their tasks live; a page of finished tasks is refreshed rarely
  let quiet = 0;
  every(1500, async () => {
    if (quiet > 0) { quiet -= 1; return; }
    const active = await load();
    quiet = active ? 0 : 5;
  }, signal);
}
