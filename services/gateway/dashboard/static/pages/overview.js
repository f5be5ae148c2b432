// Overview: counts, runs per minute (uPlot), success rate, durations, queue, runners, recent failures.
import { api, query } from "../api.js";
import { badge, duration, every, h, time } from "../ui.js";

function card(title, value, detail = "") {
  return h("div", { class: "card stat" }, h("h2", {}, title), h("p", { class: "big" }, value),
    detail ? h("p", { class: "muted" }, detail) : null);
}

function chartOptions(width) {
  const style = getComputedStyle(document.documentElement);
  const ink = style.getPropertyValue("--ink").trim();
  const accent = style.getPropertyValue("--accent").trim();
  const grid = style.getPropertyValue("--line").trim();
  const axis = { stroke: ink, grid: { stroke: grid }, ticks: { stroke: grid } };
  return {
    width, height: 220, legend: { show: false },
    scales: { y: { range: (_, min, max) => [0, Math.max(4, max)] } },
    axes: [axis, { ...axis, label: "runs / min" }],
    series: [{}, { label: "runs", stroke: accent, fill: `${accent}33`, width: 2, points: { show: false } }],
  };
}

function chartData(perMinute) {
  const now = Math.floor(Date.now() / 60000) * 60;
  const xs = perMinute.map((_, i) => now - (perMinute.length - 1 - i) * 60);
  return [xs, perMinute];
}

export function render(root, { signal }) {
  const cards = h("div", { class: "grid" });
  const chartBox = h("figure", { class: "card chart", "aria-labelledby": "chart-title" },
    h("figcaption", { id: "chart-title" }, "Finished runs per minute, last hour"));
  const failuresTitle = () => h("h2", { id: "failures-title" }, "Failures in the last hour");
  const failures = h("section", { class: "card", "aria-labelledby": "failures-title" }, failuresTitle(),
    h("p", { class: "muted" }, "…"));
  const updated = h("p", { class: "muted small", "aria-live": "off" });
  root.append(h("h1", { tabindex: -1 }, "Overview"), updated, cards, chartBox, failures);
  let chart = null;

  const resize = () => chart && chart.setSize({ width: chartBox.clientWidth - 32, height: 220 });
  window.addEventListener("resize", resize, { signal });
  signal.addEventListener("abort", () => chart && chart.destroy());

  every(3000, async () => {
    const stats = await api("/api/stats", { signal });
    const byStatus = stats.tasks_by_status;
    const queue = stats.queue;
    const slots = stats.runners.flatMap((r) => Object.values(r.slots || {}));
    const free = slots.reduce((sum, s) => sum + (s.total - s.busy), 0);
    const total = slots.reduce((sum, s) => sum + s.total, 0);
    cards.replaceChildren(
      h("div", { class: "card stat wide" }, h("h2", {}, "Tasks by status"),
        h("ul", { class: "counts", id: "status-counts" }, stats.tasks_total === 0 ? h("li", { class: "muted" }, "No task yet.") : Object.entries(byStatus).map(([status, count]) =>
          h("li", {}, h("a", { href: `#/tasks?status=${status}` }, badge(status), " ", h("strong", {}, count)))))),
      card("Success rate", stats.success_rate === null ? "—" : `${(stats.success_rate * 100).toFixed(1)} %`,
        `${stats.runs_total} runs`),
      card("Duration p50 / p95", `${duration(stats.duration_ms.p50)} / ${duration(stats.duration_ms.p95)}`,
        `${stats.duration_ms.count} runs measured`),
      card("Queue depth", queue.code_pending + queue.api_pending,
        `code ${queue.code_pending}, API ${queue.api_pending}; in flight ${queue.code_in_flight + queue.api_in_flight}`),
      card("Runners online", stats.runners.length, `${free} of ${total} slots free`),
      card("Dead letters", stats.dead_letters, stats.dead_letters ? "see Runners" : "none"),
    );
    if (!chart) {
      chart = new window.uPlot(chartOptions(chartBox.clientWidth - 32), chartData(stats.runs_per_minute), chartBox);
    } else {
      chart.setData(chartData(stats.runs_per_minute));
    }
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  }, signal);

  every(10000, async () => {
    // finished in the last hour, whenever created: the newest failed tasks, filtered by their end
    const since = Date.now() - 3600_000;
    const pages = await Promise.all(["failed", "timed_out"].map((status) =>
      api(`/api/tasks${query({ status, limit: 100 })}`, { signal })));
    const rows = pages.flatMap((page) => page.tasks).filter((task) => Date.parse(task.finished_at || task.updated_at) >= since)
      .sort((a, b) => (b.finished_at || b.updated_at).localeCompare(a.finished_at || a.updated_at));
    failures.replaceChildren(failuresTitle(), rows.length
      ? h("ul", { class: "plain" }, rows.map((task) => h("li", {}, badge(task.status), " ",
        h("a", { href: `#/tasks/${encodeURIComponent(task.id)}` }, task.name), " ", h("span", { class: "muted" },
          task.error ? task.error.message.slice(0, 120) : ""), " ", time(task.finished_at || task.updated_at))))
      : h("p", { class: "muted" }, "None."));
  }, signal);
}
