// Runners (from /api/stats) and dead letters (runs given up after too many deliveries).
import { api } from "../api.js";
import { ago, every, h, table, time } from "../ui.js";

function slots(runner) {
  const entries = Object.entries(runner.slots || {});
  return entries.length ? entries.map(([kind, s]) => `${kind} ${s.total - s.busy}/${s.total} free`).join(", ") : "—";
}

export function render(root, { signal }) {
  const runnersBox = h("section", { class: "card", "aria-labelledby": "runners-title" }, h("h2", { id: "runners-title" }, "Runners"));
  const deadBox = h("section", { class: "card", "aria-labelledby": "dead-title" }, h("h2", { id: "dead-title" }, "Dead letters"));
  root.append(h("h1", { tabindex: -1 }, "Runners and dead letters"), runnersBox, deadBox);
  every(3000, async () => {
    const [stats, dead] = await Promise.all([api("/api/stats", { signal }), api("/api/dead-letters", { signal })]);
    runnersBox.replaceChildren(h("h2", { id: "runners-title" }, "Runners"), stats.runners.length
      ? table(["Id", "Host", "Slots", "Version", "Heartbeat", "Sandbox"], stats.runners.map((r) => h("tr", {},
        h("td", {}, h("code", {}, r.instance_id)), h("td", {}, r.host), h("td", {}, slots(r)), h("td", {}, r.version),
        h("td", {}, `${ago(r.sent_at)} ago`),
        h("td", {}, r.sandbox ? (r.sandbox.usable ? "usable" : `unusable: ${r.sandbox.detail}`) : "—"))), { id: "runner-table" })
      : h("p", { class: "muted" }, "No runner is online."));
    deadBox.replaceChildren(h("h2", { id: "dead-title" }, "Dead letters"), dead.dead_letters.length
      ? table(["When", "Task", "Run", "Attempt", "Deliveries", "Reason"], dead.dead_letters.map((d) => h("tr", {},
        h("td", {}, time(d.at)), h("td", {}, h("a", { href: `#/tasks/${encodeURIComponent(d.task_id)}` }, d.task_id.slice(0, 8))),
        h("td", {}, h("code", {}, d.run_id.slice(0, 8))), h("td", {}, d.attempt), h("td", {}, d.deliveries), h("td", {}, d.reason))))
      : h("p", { class: "muted" }, "None."));
  }, signal);
}
