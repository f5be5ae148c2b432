// Task and run detail: spec, status timeline with attempts, result tree, error, live logs, actions.
import { api, recent } from "../api.js";
import { LogView } from "../logview.js";
import { FINAL, badge, confirmAction, duration, every, h, jsonTree, time, toast } from "../ui.js";

const SECRET = /auth|token|secret|password|passwd|api[-_]?key|cookie|credential|signature/i;

/** A copy with the values of secret-looking keys replaced, for display only. */
export function masked(value) {
  if (Array.isArray(value)) return value.map(masked);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, SECRET.test(k) && v ? "••••••" : masked(v)]));
  }
  return value;
}

function code(text, language) {
  const element = h("code", { class: `hljs language-${language}` });
  if (window.hljs && text.length < 200_000) element.innerHTML = window.hljs.highlight(text, { language }).value;
  else element.textContent = text;
  return h("pre", { class: "code", tabindex: 0 }, element);
}

function facts(pairs, kind = "") {
  return h("dl", { class: `facts ${kind}`.trim() }, pairs.filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function specSection(task) {
  const spec = task.spec;
  const limits = facts([["timeout", spec.timeout ? `${spec.timeout} s` : "default"], ["memory", spec.memory_mb ? `${spec.memory_mb} MB` : "default"],
    ["cpus", spec.cpus ?? "default"], ["retries", `${spec.max_retries ?? 0} (delay ${spec.retry_delay_seconds ?? 1} s × ${spec.retry_backoff ?? 2})`],
    ["network", spec.network ? "yes" : "no"], ["isolated", spec.isolated ? "yes" : "no"]]);
  const trigger = facts([["trigger", spec.task_type], ["delay", spec.delay_seconds && `${spec.delay_seconds} s`],
    ["cron", spec.cron_expression && `${spec.cron_expression} (${spec.timezone || "UTC"})`]]);
  const body = spec.function_code !== undefined && spec.function_code !== null
    ? [facts([["function", spec.function_name || "main"]]), code(spec.function_code, "python"),
      h("h3", {}, "Arguments"), jsonTree(masked({ args: spec.args || [], kwargs: spec.kwargs || {} })),
      h("h3", {}, "Requirements"), (spec.requirements || []).length
        ? h("ul", { class: "plain mono" }, spec.requirements.map((r) => h("li", {}, r))) : h("p", { class: "muted" }, "none")]
    : [facts([["request", `${spec.method || "GET"} ${spec.api_url}`], ["expected status", (spec.expected_status || []).join(", ") || "2xx"]]),
      h("h3", {}, "Headers"), jsonTree(masked(spec.headers || {})), h("h3", {}, "Body"), jsonTree(masked(spec.data ?? null))];
  return h("section", { class: "card", "aria-labelledby": "spec-title" }, h("h2", { id: "spec-title" }, "Spec"),
    ...body, h("h3", {}, "Trigger"), trigger, h("h3", {}, "Limits"), limits);
}

function outcome(task) {
  const parts = [];
  if (task.result !== null && task.result !== undefined) {
    parts.push(h("section", { class: "card", "aria-labelledby": "result-title" }, h("h2", { id: "result-title" }, "Result"),
      h("div", { id: "result" }, jsonTree(task.result))));
  }
  if (task.error) {
    const error = task.error;
    parts.push(h("section", { class: "card error", "aria-labelledby": "error-title" }, h("h2", { id: "error-title" }, "Error"),
      h("p", {}, h("strong", {}, error.exc_type || error.type), ": ", error.message),
      error.traceback ? h("pre", { class: "traceback", tabindex: 0 }, error.traceback) : null));
  }
  return parts;
}

function timeline(runs, onLogs) {
  if (!runs.length) return h("p", { class: "muted" }, "No run yet.");
  return h("ol", { class: "timeline", id: "runs" }, runs.map((run) => h("li", { dataset: { status: run.status } },
    h("div", { class: "row wrap" }, badge(run.status), h("code", { title: run.run_id }, run.run_id.slice(0, 8)),
      run.retry ? h("span", { class: "muted" }, `retry ${run.retry}`) : null,
      h("button", { type: "button", class: "link", onclick: () => onLogs(run.run_id) }, "Show logs")),
    h("ol", { class: "steps" },
      run.scheduled_for ? h("li", {}, "due ", time(run.scheduled_for)) : null,
      h("li", {}, "queued ", time(run.queued_at), run.lag_ms !== null && run.lag_ms !== undefined ? ` (lag ${duration(run.lag_ms)})` : ""),
      (run.attempts || []).map((attempt) => h("li", {}, `attempt ${attempt.attempt} `, badge(attempt.status), " started ",
        time(attempt.started_at), attempt.finished_at ? [" → ", time(attempt.finished_at)] : "",
        attempt.runner_id ? h("span", { class: "muted" }, ` on ${attempt.runner_id}`) : "",
        attempt.error_type ? h("span", { class: "muted" }, ` (${attempt.error_type})`) : "")),
      run.finished_at ? h("li", {}, "finished ", time(run.finished_at), ` in ${duration(run.duration_ms)}`) : null))));
}

export function render(root, { id, signal }) {
  const path = `/api/tasks/${encodeURIComponent(id)}`;
  const status = h("span", { id: "task-status", "aria-live": "polite" });
  const heading = h("h1", { tabindex: -1 }, "Task");
  const actions = h("div", { class: "row wrap actions" });
  const summary = h("div", {});
  const runsBox = h("section", { class: "card", "aria-labelledby": "runs-title" }, h("h2", { id: "runs-title" }, "Runs"));
  const outcomes = h("div", {});
  const specBox = h("div", {});
  const logsBox = h("div", {});
  root.append(h("p", {}, h("a", { href: "#/tasks" }, "← Tasks")), h("div", { class: "row wrap" }, heading, status),
    actions, summary, outcomes, logsBox, runsBox, specBox);
  let task = recent.get(id) || null;
  let logSignal = null;

  function showLogs(runId = null) {
    if (logSignal) logSignal.abort();
    logSignal = new AbortController();
    signal.addEventListener("abort", () => logSignal.abort());
    const view = new LogView(`${task ? task.name : id}${runId ? `-${runId.slice(0, 8)}` : ""}`);
    logsBox.replaceChildren(view.element);
    view.stream(`${path}${runId ? `/runs/${encodeURIComponent(runId)}` : ""}/logs?follow=true`, logSignal.signal);
  }

  async function act(verb, call) {
    try { await call(); toast(`${verb}: done`); await refresh(true); } catch (problem) { toast(`${verb}: ${problem.message}`, "error"); }
  }

  function draw() {
    heading.textContent = task.name;
    status.replaceChildren(badge(task.status, { dataset: { status: task.status } }));
    status.dataset.status = task.status;
    actions.replaceChildren(...[
      !FINAL.has(task.status) ? h("button", { type: "button", id: "cancel-task", onclick: async () => {
        if (await confirmAction(`Cancel “${task.name}”? A running run is killed.`, "Cancel task")) {
          act("Cancel", () => api(`${path}/cancel`, { method: "POST" }));
        }
      } }, "Cancel") : null,
      h("button", { type: "button", class: "secondary", id: "rerun-task", onclick: async () => {
        try {
          const created = await api(task.task_type === "scheduled" ? "/api/scheduled-tasks" : "/api/tasks", { method: "POST", body: task.spec });
          recent.set(created.id, created);
          window.location.hash = `#/tasks/${encodeURIComponent(created.id)}`;
        } catch (problem) { toast(`Re-run: ${problem.message}`, "error"); }
      } }, "Re-run with the same spec"),
      task.task_type === "scheduled" ? h("a", { class: "button secondary", href: `#/schedules/${encodeURIComponent(id)}` }, "Schedule & ledger") : null,
      h("button", { type: "button", class: "danger", id: "delete-task", onclick: async () => {
        if (!(await confirmAction(`Delete “${task.name}” with its runs and logs? This cannot be undone.`, "Delete"))) return;
        try { await api(path, { method: "DELETE" }); toast("Deleted"); window.location.hash = "#/tasks"; }
        catch (problem) { toast(`Delete: ${problem.message}`, "error"); }
      } }, "Delete")].filter(Boolean));
    summary.replaceChildren(h("section", { class: "card" }, facts([
      ["id", h("code", {}, task.id)], ["kind", task.kind], ["trigger", task.task_type], ["created", time(task.created_at)],
      ["queued", task.queued_at && time(task.queued_at)], ["started", task.started_at && time(task.started_at)],
      ["finished", task.finished_at && time(task.finished_at)], ["duration", duration(task.duration_ms)],
      ["runs", task.run_count], ["next run", task.next_run_at && time(task.next_run_at)],
      ["next retry", task.next_retry_at && time(task.next_retry_at)],
      ["waiting for", task.waiting_reason && h("a", { href: "#/limits", id: "waiting-reason" }, task.waiting_reason)]], "summary")));
    outcomes.replaceChildren(...outcome(task));
    if (!specBox.firstChild) specBox.append(specSection(task));
  }

  let lastSeen = "";
  async function refresh(force = false) {
    task = await api(path, { signal });
    recent.delete(id);
    const key = `${task.status}:${task.event_seq}`;
    if (key === lastSeen && !force) return;
    lastSeen = key;
    draw();
    const runs = (await api(`${path}/runs?limit=20`, { signal })).runs;
    runsBox.replaceChildren(h("h2", { id: "runs-title" }, "Runs"), timeline(runs, showLogs));
  }

  if (task) draw();
  showLogs();
  every(1000, async () => {
    if (task && FINAL.has(task.status) && lastSeen) return;
    try { await refresh(); } catch (problem) {
      if (problem.status === 404) root.replaceChildren(h("h1", {}, "Task not found"), h("p", {}, h("a", { href: "#/tasks" }, "Back to tasks")));
      else throw problem;
    }
  }, signal);
}
