"""Rich renderables for what the API returns: task and run tables, details, schedules, stats, health."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.json import JSON
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "succeeded": "green",
    "completed": "green",
    "ok": "green",
    "active": "green",
    "failed": "red",
    "timed_out": "red",
    "expired": "red",
    "down": "bold red",
    "cancelled": "magenta",
    "paused": "yellow",
    "retrying": "yellow",
    "degraded": "yellow",
    "running": "cyan",
    "queued": "blue",
    "pending": "blue",
}
SPARK = "▁▂▃▄▅▆▇█"


def status_text(status: str | None) -> Text:
    """A status word in its colour."""
    return Text(status or "-", style=STATUS_STYLES.get(status or "", ""))


def when(value: str | None) -> str:
    """An API timestamp in local time, to the second."""
    if not value:
        return "-"
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def short_when(value: str | None) -> str:
    """An API timestamp in local time, as short as a table column wants: the time alone if today."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return value
    now = datetime.now().astimezone()
    if moment.date() == now.date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%b %d %H:%M" if moment.year == now.year else "%Y-%m-%d %H:%M")


def duration(milliseconds: float | None) -> str:
    """``24 ms``, ``1.01 s``, ``2 min 03 s``."""
    if milliseconds is None:
        return "-"
    if milliseconds < 1000:
        return f"{milliseconds:.0f} ms"
    seconds = milliseconds / 1000
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def value_view(value: Any) -> RenderableType:
    """A result or payload: pretty JSON for structures, plain text for strings."""
    if isinstance(value, str):
        return Text(value)
    return JSON(json.dumps(value, ensure_ascii=False, default=str))


def _table(*columns: str, wrap: tuple[str, ...] = ()) -> Table:
    # only free-text columns wrap; ids, states, times and numbers stay whole on narrow terminals
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold", no_wrap=column not in wrap, min_width=12 if column in wrap else None)
    return table


def minimum_width(console: Console, table: Table) -> int:
    """Columns that must not wrap at their full width, the others at their minimum, plus padding."""
    options = console.options.update(max_width=10_000)
    total = 2 * (len(table.columns) - 1)  # one space each side between columns, none at the edges
    for column in table.columns:
        if column.no_wrap:
            total += max(Measurement.get(console, options, cell).maximum for cell in (column.header, *column.cells))
        else:
            total += column.min_width or 1
    return total


def _fields(rows: list[tuple[str, RenderableType | str]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    for label, value in rows:
        grid.add_row(label, value)
    return grid


def what(task: dict[str, Any]) -> str:
    """What a task runs: ``main()`` of its code, or ``METHOD url``."""
    spec = task.get("spec", {})
    if task.get("kind") == "code":
        return f"{spec.get('function_name')}()"
    return f"{spec.get('method', 'GET')} {spec.get('api_url')}"


def task_table(tasks: list[dict[str, Any]]) -> Table:
    """Tasks, one a row."""
    table = _table("ID", "NAME", "KIND", "TYPE", "STATUS", "CREATED", "DURATION", wrap=("NAME",))
    for task in tasks:
        table.add_row(
            task["id"],
            task["name"],
            task["kind"],
            task["task_type"],
            status_text(task["status"]),
            short_when(task.get("created_at")),
            duration(task.get("duration_ms")),
        )
    return table


def error_line(error: dict[str, Any] | None) -> Text:
    """``message (type)`` of a run error."""
    if not error:
        return Text("-")
    return Text(f"{error.get('message', '')} ({error.get('type', 'error')})", style="red")


def task_detail(task: dict[str, Any]) -> RenderableType:
    """Everything about one task."""
    spec = task.get("spec", {})
    rows: list[tuple[str, RenderableType | str]] = [
        ("id", task["id"]),
        ("name", task["name"]),
        ("calls", what(task)),
        ("kind", f"{task['kind']}, {task['task_type']}"),
        ("status", status_text(task["status"])),
    ]
    if spec.get("cron_expression"):
        rows.append(("schedule", f"{spec['cron_expression']} ({spec.get('timezone', 'UTC')})"))
    if spec.get("delay_seconds") is not None:
        rows.append(("delay", f"{spec['delay_seconds']:g} s"))
    if spec.get("requirements"):
        rows.append(("requirements", " ".join(spec["requirements"])))
    rows += [
        ("created", when(task.get("created_at"))),
        ("started", when(task.get("started_at"))),
        ("finished", when(task.get("finished_at"))),
        ("duration", duration(task.get("duration_ms"))),
    ]
    if task.get("next_run_at"):
        rows.append(("next run", when(task["next_run_at"])))
    if task.get("next_retry_at"):
        rows.append(("next retry", when(task["next_retry_at"])))
    last = task.get("last_run")
    if last:
        rows.append(("last run", Text.assemble(f"{last['run_id']} ", status_text(last.get("status")))))
    rows.append(("run count", str(task.get("run_count", 0))))
    if task.get("error"):
        rows.append(("error", error_line(task["error"])))
    parts: list[RenderableType] = [_fields(rows)]
    if task.get("result") is not None:
        parts += [Text("result", style="bold"), value_view(task["result"])]
    traceback = (task.get("error") or {}).get("traceback")
    if traceback:
        parts += [Text("traceback", style="bold"), Text(traceback.rstrip(), style="dim")]
    return Group(*parts)


def outcome(task: dict[str, Any]) -> RenderableType:
    """A finished task in short: status, time, result or error."""
    status = task["status"]
    if task.get("task_type") == "scheduled" and task.get("last_run"):
        status = task["last_run"]["status"]
    mark = "✓" if status in ("succeeded", "completed") else "✗"
    head = Text.assemble(
        (f"{mark} ", STATUS_STYLES.get(status, "")),
        status_text(status),
        f" in {duration(task.get('duration_ms'))} · {task['name']} · {task['id']}",
    )
    parts: list[RenderableType] = [head]
    if task.get("error"):
        parts.append(error_line(task["error"]))
        if task["error"].get("traceback"):
            parts.append(Text(task["error"]["traceback"].rstrip(), style="dim"))
    if task.get("result") is not None:
        parts.append(value_view(task["result"]))
    return Group(*parts)


def runs_table(runs: list[dict[str, Any]]) -> Table:
    """Runs of a task, one a row."""
    table = _table("RUN ID", "SLOT", "STATUS", "ATTEMPT", "SCHEDULED FOR", "DURATION", "ERROR", wrap=("SLOT", "ERROR"))
    for run in runs:
        table.add_row(
            run["run_id"],
            run["slot"],
            status_text(run["status"]),
            str(run.get("attempt", 1)),
            short_when(run.get("scheduled_for")),
            duration(run.get("duration_ms")),
            error_line(run.get("error")),
        )
    return table


def run_detail(run: dict[str, Any]) -> RenderableType:
    """One run with its attempts."""
    rows: list[tuple[str, RenderableType | str]] = [
        ("run", run["run_id"]),
        ("task", run["task_id"]),
        ("slot", run["slot"]),
        ("status", status_text(run["status"])),
        ("scheduled for", when(run.get("scheduled_for"))),
        ("started", when(run.get("started_at"))),
        ("finished", when(run.get("finished_at"))),
        ("duration", duration(run.get("duration_ms"))),
        ("lag", duration(run.get("lag_ms"))),
        ("runner", run.get("runner_id") or "-"),
        ("exit code", str(run.get("exit_code", "-"))),
    ]
    if run.get("error"):
        rows.append(("error", error_line(run["error"])))
    attempts = _table("ATTEMPT", "STATUS", "RUNNER", "STARTED", "FINISHED", "ERROR TYPE", wrap=("RUNNER",))
    for attempt in run.get("attempts", []):
        attempts.add_row(
            str(attempt["attempt"]),
            status_text(attempt.get("status")),
            attempt.get("runner_id") or "-",
            when(attempt.get("started_at")),
            when(attempt.get("finished_at")),
            attempt.get("error_type") or "-",
        )
    parts: list[RenderableType] = [_fields(rows), Text(""), attempts]
    if run.get("result") is not None:
        parts += [Text("result", style="bold"), value_view(run["result"])]
    return Group(*parts)


def schedules_table(schedules: list[dict[str, Any]]) -> Table:
    """Scheduled tasks, one a row."""
    table = _table("ID", "NAME", "STATUS", "SCHEDULE", "NEXT RUN", "LAST RUN", "FIRED", wrap=("NAME", "SCHEDULE"))
    for item in schedules:
        last = item.get("last_run") or {}
        lost = [
            f"{item[key]} {word}"
            for key, word in (("missed_count", "missed"), ("skipped_count", "skipped"))
            if item[key]
        ]
        fired = str(item["fired_count"]) + (f" ({', '.join(lost)})" if lost else "")
        table.add_row(
            item["id"],
            item["name"],
            status_text(item["status"]),
            f"{item['cron_expression']} {item['timezone']}",
            short_when(item.get("next_run_at")),
            status_text(last.get("status")) if last else "-",
            fired,
        )
    return table


def _counts(counts: dict[str, int]) -> Text:
    if not counts:
        return Text("-")
    parts = [Text.assemble(status_text(key), f" {value}") for key, value in sorted(counts.items())]
    return Text("  ").join(parts)


def sparkline(values: list[int]) -> str:
    """Values as a row of block characters, highest = full block."""
    top = max(values, default=0)
    if top == 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, round(v / top * (len(SPARK) - 1)))] for v in values)


def stats_view(stats: dict[str, Any]) -> RenderableType:
    """Counters, rates, durations, queue depth and runners."""
    rate = stats.get("success_rate")
    durations = stats.get("duration_ms", {})
    queue = stats.get("queue", {})
    runners = stats.get("runners", [])
    free = sum(s["total"] - s["busy"] for r in runners for s in r.get("slots", {}).values())
    per_minute = stats.get("runs_per_minute", [])
    return _fields(
        [
            ("tasks", Text.assemble(f"{stats['tasks_total']} total  ", _counts(stats.get("tasks_by_status", {})))),
            ("by kind", _counts(stats.get("tasks_by_kind", {}))),
            ("by trigger", _counts(stats.get("tasks_by_trigger", {}))),
            ("runs", Text.assemble(f"{stats['runs_total']} total  ", _counts(stats.get("runs_by_status", {})))),
            ("success rate", "-" if rate is None else f"{rate:.0%}"),
            ("duration", f"p50 {duration(durations.get('p50'))}  p95 {duration(durations.get('p95'))}"),
            (
                "queue",
                f"code {queue.get('code_pending', 0)} waiting, {queue.get('code_in_flight', 0)} in flight;  "
                f"api {queue.get('api_pending', 0)} waiting, {queue.get('api_in_flight', 0)} in flight",
            ),
            ("runners", f"{len(runners)} ({free} free slots)"),
            ("dead letters", str(stats.get("dead_letters", 0))),
            ("last hour", f"{sparkline(per_minute)}  {sum(per_minute)} runs"),
        ]
    )


def health_view(health: dict[str, Any], url: str) -> RenderableType:
    """Overall status and each dependency."""
    head = Text.assemble("Taskmesh ", health.get("version", "?"), f" at {url}: ", status_text(health["status"]))
    table = _table("CHECK", "STATUS", "COUNT", "DETAIL", wrap=("DETAIL",))
    for name, check in health.get("checks", {}).items():
        count = check.get("count")
        table.add_row(name, status_text(check["status"]), "-" if count is None else str(count), check.get("detail", ""))
    return Group(head, table)
