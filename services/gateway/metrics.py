"""Prometheus text exposition: the gateway's own request counters plus the store's statistics."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable

from proto.api import Histogram, Stats
from services.gateway.admission import Admission

REQUEST_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    """Requests by route and status, and their durations."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.buckets = [0] * (len(REQUEST_BOUNDS) + 1)
        self.seconds_sum = 0.0
        self.count = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests[(method, route, status)] += 1
        self.buckets[bisect.bisect_left(REQUEST_BOUNDS, seconds)] += 1
        self.seconds_sum += seconds
        self.count += 1

    def render(self, stats: Stats | None, admissions: Iterable[Admission] = ()) -> str:
        lines = [
            "# HELP taskmesh_http_requests_total HTTP requests by method, route and status.",
            "# TYPE taskmesh_http_requests_total counter",
        ]
        admitted = list(admissions)
        lines += [
            "# HELP taskmesh_gateway_open Long-lived requests open on this gateway, by kind.",
            "# TYPE taskmesh_gateway_open gauge",
        ]
        lines += [f'taskmesh_gateway_open{{kind="{_escape(a.kind)}"}} {a.active}' for a in admitted]
        lines += [
            "# HELP taskmesh_gateway_refused_total Long-lived requests refused with 429, by kind.",
            "# TYPE taskmesh_gateway_refused_total counter",
        ]
        lines += [f'taskmesh_gateway_refused_total{{kind="{_escape(a.kind)}"}} {a.refused}' for a in admitted]
        for (method, route, status), value in sorted(self.requests.items()):
            lines.append(
                f'taskmesh_http_requests_total{{method="{method}",route="{_escape(route)}",status="{status}"}} {value}'
            )
        cumulative, running = [], 0
        for bucket in self.buckets:
            running += bucket
            cumulative.append(running)
        lines += _histogram(
            "taskmesh_http_request_duration_seconds",
            "HTTP request durations.",
            Histogram(bounds=list(REQUEST_BOUNDS), counts=cumulative, sum=self.seconds_sum, count=self.count),
        )
        if stats is None:
            lines += [
                "# HELP taskmesh_store_up Whether the store answered.",
                "# TYPE taskmesh_store_up gauge",
                "taskmesh_store_up 0",
            ]
            return "\n".join(lines) + "\n"
        lines += [
            "# HELP taskmesh_store_up Whether the store answered.",
            "# TYPE taskmesh_store_up gauge",
            "taskmesh_store_up 1",
            "# HELP taskmesh_tasks Tasks by status.",
            "# TYPE taskmesh_tasks gauge",
        ]
        lines += [f'taskmesh_tasks{{status="{s}"}} {n}' for s, n in sorted(stats.tasks_by_status.items())]
        lines += ["# HELP taskmesh_runs Runs kept, by status.", "# TYPE taskmesh_runs gauge"]
        lines += [f'taskmesh_runs{{status="{s}"}} {n}' for s, n in sorted(stats.runs_by_status.items())]
        lines += [
            "# HELP taskmesh_queue_depth Runs waiting on the work queue.",
            "# TYPE taskmesh_queue_depth gauge",
            f'taskmesh_queue_depth{{pool="code"}} {stats.queue.code_pending}',
            f'taskmesh_queue_depth{{pool="api"}} {stats.queue.api_pending}',
            "# HELP taskmesh_runs_in_flight Runs held by runners.",
            "# TYPE taskmesh_runs_in_flight gauge",
            f'taskmesh_runs_in_flight{{pool="code"}} {stats.queue.code_in_flight}',
            f'taskmesh_runs_in_flight{{pool="api"}} {stats.queue.api_in_flight}',
            "# HELP taskmesh_runners Runners alive.",
            "# TYPE taskmesh_runners gauge",
            f"taskmesh_runners {len(stats.runners)}",
            "# HELP taskmesh_stale_outcomes_rejected_total Outcomes of superseded attempts rejected.",
            "# TYPE taskmesh_stale_outcomes_rejected_total counter",
            f"taskmesh_stale_outcomes_rejected_total {stats.stale_outcomes_rejected}",
            "# HELP taskmesh_dead_letters Runs given up after too many deliveries.",
            "# TYPE taskmesh_dead_letters gauge",
            f"taskmesh_dead_letters {stats.dead_letters}",
            "# HELP taskmesh_consumer_restarts_total Consumer loops that died and were restarted.",
            "# TYPE taskmesh_consumer_restarts_total counter",
        ]
        lines += [
            f'taskmesh_consumer_restarts_total{{service="{beat.service}",instance="{beat.instance_id}",'
            f'consumer="{_escape(consumer)}"}} {count}'
            for beat in stats.services
            for consumer, count in sorted(beat.consumer_restarts.items())
        ]
        lines += _histogram(
            "taskmesh_run_duration_milliseconds", "Run durations (start to finish).", stats.duration_histogram
        )
        lines += _histogram(
            "taskmesh_schedule_lag_milliseconds", "Run start minus scheduled time.", stats.schedule_lag_histogram
        )
        return "\n".join(lines) + "\n"


def _histogram(name: str, help_text: str, histogram: Histogram) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
    labels = [f"{bound:g}" for bound in histogram.bounds] + ["+Inf"]
    for label, count in zip(labels, histogram.counts, strict=False):
        lines.append(f'{name}_bucket{{le="{label}"}} {count}')
    lines += [f"{name}_sum {histogram.sum:g}", f"{name}_count {histogram.count}"]
    return lines


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
