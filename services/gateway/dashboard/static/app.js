// The shell: sign-in when the gateway asks for a token, then a hash router over the pages.
import { api, auth, HttpError } from "./api.js";
import { h } from "./ui.js";
import * as overview from "./pages/overview.js";
import * as tasks from "./pages/tasks.js";
import * as detail from "./pages/detail.js";
import * as schedules from "./pages/schedules.js";
import * as submit from "./pages/submit.js";
import * as runners from "./pages/runners.js";
import * as limits from "./pages/limits.js";

const ROUTES = [
  [/^\/?$/, overview.render, "Overview"],
  [/^\/tasks$/, tasks.render, "Tasks"],
  [/^\/tasks\/([^/]+)$/, detail.render, "Task"],
  [/^\/schedules$/, schedules.renderList, "Schedules"],
  [/^\/schedules\/([^/]+)$/, schedules.renderOne, "Schedule"],
  [/^\/submit$/, submit.render, "Submit"],
  [/^\/runners$/, runners.render, "Runners"],
  [/^\/limits$/, limits.render, "Limits"],
];

const main = document.getElementById("main");
let current = null;

function location() {
  const hash = window.location.hash.replace(/^#/, "") || "/";
  const [path, search = ""] = hash.split("?");
  return { path, params: new URLSearchParams(search) };
}

function route() {
  if (current) current.abort();
  current = new AbortController();
  const { path, params } = location();
  for (const link of document.querySelectorAll("#nav a")) {
    const target = link.getAttribute("href").replace(/^#/, "");
    const active = target === "/" ? path === "/" : path.startsWith(target);
    if (active) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  for (const [pattern, render, title] of ROUTES) {
    const match = path.match(pattern);
    if (match) {
      document.title = `${title} · Taskmesh`;
      main.replaceChildren();
      render(main, { id: match[1] && decodeURIComponent(match[1]), params, signal: current.signal });
      return;
    }
  }
  main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/" }, "Back to the overview")));
}

function showLogin(message = "") {
  if (current) current.abort();
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.title = "Sign in · Taskmesh";
  const input = h("input", { id: "token", name: "token", type: "password", autocomplete: "current-password",
    required: true, "aria-describedby": "login-error" });
  const error = h("p", { id: "login-error", class: "field-error", role: "alert" }, message);
  const form = h("form", { class: "card login", onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      await api("/api/tasks?limit=1", { token: input.value.trim() });
      auth.save(input.value.trim());
      start();
    } catch (problem) {
      error.textContent = problem instanceof HttpError && problem.status === 401
        ? "This token was refused." : `The gateway did not answer: ${problem.message}`;
      input.select();
    }
  } }, h("h1", {}, "Sign in"), h("p", {}, "This gateway needs an API token (one of TASKMESH_API_TOKENS). ",
    "It is kept in this tab only, until you sign out or close it."),
  h("label", { for: "token" }, "API token"), input, error, h("button", { type: "submit" }, "Sign in"));
  main.replaceChildren(form);
  input.focus();
}

async function start() {
  try {
    await api("/api/tasks?limit=1", { token: auth.token ?? "" });
  } catch (problem) {
    if (problem instanceof HttpError && problem.status === 401) {
      auth.clear();
      showLogin();
      return;
    }
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = !auth.token;
  route();
}

window.addEventListener("hashchange", () => { route(); main.focus({ preventScroll: true }); });
window.addEventListener("taskmesh:unauthorized", () => showLogin("Your token is no longer accepted; sign in again."));
document.getElementById("logout").addEventListener("click", () => { auth.clear(); showLogin(); });
start();
