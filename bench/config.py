"""Workload parameters: the issue's defaults, and the ``--quick`` scale-down."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace


@dataclass(frozen=True)
class Params:
    """Sizes and durations of every workload."""

    w1_tasks: int = 10_000
    http_concurrency: int = 64
    """Requests in flight of the one HTTP client (keep-alive connections)."""
    nats_concurrency: int = 256
    """Requests in flight of the one NATS client."""
    w2_tasks: int = 500
    w3_sizes: tuple[int, ...] = (10_000, 100_000)
    w3_delay_min_s: float = 2.0
    w3_delay_max_s: float = 100.0
    w4_schedules: int = 1_000
    w4_window_s: float = 60.0
    w4_warmup_s: float = 3.0
    w5_latency_runs: int = 50
    w5_pace_s: float = 0.5
    """Pause between sequential code tasks, so a warm pool is refilled as in steady use."""
    w5_burst: int = 600
    w5_import_runs: int = 5
    w6_tasks: int = 10_000
    scale_runners: tuple[int, ...] = (1, 2, 3)
    scale_w1_tasks: int = 10_000
    scale_w5_burst: int = 200
    w7_retained: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    """Checkpoints of W7: finished tasks retained when memory, disk, restart and lists are measured."""
    w7_max_backlog: int = 20_000
    """W7 submits as fast as accepted, but no further ahead of the finished count (the queue is not W7's subject)."""
    w7_requests: int = 200
    """Sequential requests per query for W7's percentiles."""
    w7_soak_s: float = 600.0
    w7_soak_rate: float = 0.0
    """Tasks a second in the soak; 0: half the rate W7 reached filling up to its last checkpoint
    (what this machine sustains right now, shared as it may be)."""
    w7_soak_retention_s: float = 120.0
    """The soak's task retention: short, so retained tasks (and sweeps) reach a steady state in minutes."""
    w7_sample_s: float = 10.0
    w8_flood: int = 10_000
    """W8: tenant A's tasks, submitted first, behind one concurrency-limited key."""
    w8_others: int = 100
    """W8: tenant B's tasks, submitted after A's, behind the same key."""
    w8_limit: int = 8
    """W8: ``max_concurrency`` of the shared key."""
    w8_rate_tasks: int = 10_000
    """W8: tasks of each throughput burst (no limit; a limit that never binds)."""
    cores: int = os.cpu_count() or 1
    seed: int = 9

    def quick(self) -> Params:
        """About 1/20 of everything, so a full run fits in a few minutes."""
        return replace(
            self,
            w1_tasks=500,
            w2_tasks=40,
            w3_sizes=(500, 5_000),
            w3_delay_min_s=2.0,
            w3_delay_max_s=8.0,
            w4_schedules=50,
            w4_window_s=10.0,
            w4_warmup_s=2.0,
            w5_latency_runs=10,
            w5_burst=20,
            w5_import_runs=2,
            w6_tasks=500,
            scale_w1_tasks=500,
            scale_w5_burst=20,
            w7_retained=(2_000, 10_000),
            w7_requests=100,
            w7_soak_s=60.0,
            w7_soak_retention_s=20.0,
            w8_flood=500,
            w8_others=10,
            w8_rate_tasks=500,
        )

    def as_dict(self) -> dict:
        return asdict(self)
