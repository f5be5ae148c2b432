"""Python's cyclic garbage collector, tuned for a service that holds work in progress in memory.

With the interpreter's defaults (thresholds 700, 10, 10) a full collection walks every tracked
object, and while the held state grows (a flood of submissions, each a record of Structs, lists
and dicts) full collections come every half second or so and each takes longer than the last:
in a W3-like run of 50,000 delayed tasks the store spent 6.5 s in 48 of them (up to 230 ms
each, its event loop stopped for as long), the scheduler 2.7 s, and runs started up to 4 s late.
With these settings the store ran one full collection (at start-up), and the runs' lateness p99
was 52–197 ms (bench/README, "The garbage collector").

Reference cycles are still collected, only less often; in a W7 soak every Python service's memory
stayed within 1 MiB of what it was with the defaults.
"""

from __future__ import annotations

import gc

THRESHOLDS = (10_000, 20, 100)
"""Allocations before a young collection; young collections before a middle one; middle ones
before a full one is considered (Python also waits until a quarter of the old objects are new)."""


def tune_collector() -> None:
    """Freeze what start-up built (modules, classes, settings) out of every later collection, then
    collect less often. Call once, after imports and before the service starts its work."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
