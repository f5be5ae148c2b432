"""A Beat scheduler that passes each fire's due time to the task, so lateness can be measured."""

from __future__ import annotations

import copy

from celery.beat import PersistentScheduler


class DueScheduler(PersistentScheduler):
    """PersistentScheduler, plus ``due`` (epoch seconds: last run + interval) in the task's kwargs."""

    def apply_async(self, entry, producer=None, advance=True, **kwargs):
        # tick() hands over the entry before it advances, so last_run_at is the previous fire.
        last = entry.schedule.maybe_make_aware(entry.last_run_at or entry.default_now())
        fired = copy.copy(entry)
        fired.kwargs = {**entry.kwargs, "due": (last + entry.schedule.run_every).timestamp()}
        return super().apply_async(fired, producer, advance, **kwargs)
