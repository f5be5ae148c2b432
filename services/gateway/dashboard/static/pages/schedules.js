// Schedules: the list with next/last run and counters, pause/resume/trigger, and the ledger timeline.
import { api } from "../api.js";
import { badge, duration, every, h, time, toast } from "../ui.js";

function actions(schedule, after) {
  const path = `/api/scheduled-tasks/${encodeURIComponent(schedule.id)}`;
  const act = (verb, suffix) => async () => {
    try {
      await api(`${path}/${suffix}`, { method: "POST" });
      toast(`${verb}: ${schedule.name}`);
    } catch (problem) { toast(`${verb}: ${problem.message}`, "error"); }
    await after();
  };
  const done = ["completed", "cancelled"].includes(schedule.status);
  return h("div", { class: "row" },
    schedule.status === "paused"
      ? h("button", { type: "button", class: "secondary", "data-action": "resume", onclick: act("Resumed", "resume"), "aria-label": `Resume ${schedule.name}` }, "Resume")
      : h("button", { type: "button", class: "secondary", "data-action": "pause", disabled: done, onclick: act("Paused", "pause"), "aria-label": `Pause ${schedule.name}` }, "Pause"),
    h("button", { type: "button", "data-action": "trigger", disabled: done, onclick: act("Triggered", "trigger"), "aria-label": `Trigger ${schedule.name} now` }, "Trigger"));
}

function lastRun(run) {
  return run ? [badge(run.status), " ", time(run.finished_at || run.started_at || run.scheduled_for)] : h("span", { class: "muted" }, "never");
}

export function renderList(root, { signal }) {
  const body = h("tbody", {}, h("tr", {}, h("td", { colspan: 7, class: "muted" }, "Loading…")));
  root.append(h("h1", { tabindex: -1 }, "Schedules"),
    h("p", {}, h("a", { href: "#/submit?trigger=scheduled" }, "New schedule")),
    h("div", { class: "scroll" }, h("table", { id: "schedule-table" },
      h("thead", {}, h("tr", {}, ["Name", "State", "Cron", "Next run", "Last run", "Fired / missed / skipped", "Actions"]
        .map((t) => h("th", { scope: "col" }, t)))), body)));
  let drawn = "";
  const load = async () => {
    const { schedules } = await api("/api/scheduled-tasks", { signal });
    const key = JSON.stringify(schedules);
    if (key === drawn) return;  // redrawing unchanged rows would take the keyboard focus away
    drawn = key;
    body.replaceChildren(...(schedules.length ? schedules.map((s) => h("tr", { dataset: { id: s.id } },
      h("td", {}, h("a", { href: `#/schedules/${encodeURIComponent(s.id)}` }, s.name)),
      h("td", {}, badge(s.status)),
      h("td", {}, h("code", {}, s.cron_expression), h("span", { class: "muted" }, ` ${s.timezone}`)),
      h("td", {}, time(s.next_run_at)), h("td", {}, lastRun(s.last_run)),
      h("td", {}, `${s.fired_count} / ${s.missed_count} / ${s.skipped_count}`),
      h("td", {}, actions(s, load)))) : [h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No schedule yet."))]));
  };
  every(3000, load, signal);
}

function ledger(entries) {
  if (!entries.length) return h("p", { class: "muted" }, "No slot yet.");
  return h("ol", { class: "timeline", id: "ledger" }, entries.map((entry) => h("li", { dataset: { state: entry.state } },
    h("div", { class: "row wrap" }, time(entry.scheduled_for), badge(entry.state),
      entry.count > 1 ? h("span", {}, `×${entry.count}`) : null,
      entry.lag_ms !== undefined && entry.lag_ms !== null ? h("span", { class: "muted" }, `lag ${duration(entry.lag_ms)}`) : null,
      entry.reason ? h("span", { class: "muted" }, entry.reason) : null,
      entry.run_id ? h("code", { title: entry.run_id }, entry.run_id.slice(0, 8)) : null))));
}

export function renderOne(root, { id, signal }) {
  const path = `/api/scheduled-tasks/${encodeURIComponent(id)}`;
  const head = h("div", {});
  const box = h("section", { class: "card", "aria-labelledby": "ledger-title" }, h("h2", { id: "ledger-title" }, "Ledger"));
  root.append(h("p", {}, h("a", { href: "#/schedules" }, "← Schedules")), head, box);
  let drawn = "";
  const load = async () => {
    const [task, book] = await Promise.all([api(path, { signal }), api(`${path}/ledger?limit=100`, { signal })]);
    const key = JSON.stringify([task, book]);
    if (key === drawn) return;  // redrawing unchanged buttons would take the keyboard focus away
    drawn = key;
    head.replaceChildren(h("div", { class: "row wrap" }, h("h1", { tabindex: -1 }, task.name),
      h("span", { id: "schedule-status" }, badge(task.status))),
      actions(task, load),
      h("section", { class: "card" }, h("dl", { class: "facts" },
        h("dt", {}, "cron"), h("dd", {}, h("code", {}, task.spec.cron_expression), ` in ${task.spec.timezone || "UTC"}`),
        h("dt", {}, "next run"), h("dd", {}, time(task.next_run_at)),
        h("dt", {}, "last run"), h("dd", {}, lastRun(task.last_run)),
        h("dt", {}, "counters"), h("dd", { id: "counters" }, `fired ${book.fired_count}, missed ${book.missed_count}, skipped ${book.skipped_count}`),
        h("dt", {}, "task"), h("dd", {}, h("a", { href: `#/tasks/${encodeURIComponent(id)}` }, "spec, runs and logs")))));
    box.replaceChildren(h("h2", { id: "ledger-title" }, "Ledger"), ledger(book.entries));
  };
  every(2000, load, signal);
}
