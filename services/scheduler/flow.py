"""Admission in memory: per-key permits, token buckets and fair queues of waiting runs (no I/O)."""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from proto import bounds
from proto.flow import AGING_SECONDS_PER_PRIORITY, KeyLimit, LimitView, Permit, WaitingRun
from proto.rates import parse_rate
from proto.tasks import TaskSpec
from services.common.clock import utcnow

_EPSILON = 1e-9
"""Token arithmetic in floats: 0.4 s at 5/s must make two tokens, not 1.9999999999999998."""


def keys_of(spec: TaskSpec, task_id: str) -> list[str]:
    """The keys a run of ``spec`` needs a permit of; a rate without a key limits the task itself."""
    return spec.concurrency_keys or [f"task:{task_id}"]


@dataclass
class TokenBucket:
    """``per_second`` tokens a second, at most one second's worth (at least one) held."""

    per_second: float
    tokens: float
    refilled_at: float

    def refill(self, now: float) -> None:
        capacity = max(1.0, self.per_second)
        self.tokens = min(capacity, self.tokens + max(0.0, now - self.refilled_at) * self.per_second)
        self.refilled_at = now

    def seconds_to_token(self) -> float:
        return 0.0 if self.has_token else (1.0 - self.tokens) / self.per_second

    @property
    def has_token(self) -> bool:
        return self.tokens >= 1.0 - _EPSILON


def _refilled(bucket: TokenBucket, now: float) -> bool:
    bucket.refill(now)
    return bucket.tokens >= max(1.0, bucket.per_second) - _EPSILON


@dataclass
class FairQueue:
    """Runs waiting on one key: round-robin over fairness keys, by aged priority within each."""

    groups: dict[str, list[tuple[float, int, str]]] = field(default_factory=dict)
    turns: deque[str] = field(default_factory=deque)
    _chosen: str | None = None

    def push(self, fairness: str, score: float, seq: int, run_id: str) -> None:
        heap = self.groups.get(fairness)
        if heap is None:
            heap = self.groups[fairness] = []
            self.turns.append(fairness)
        heapq.heappush(heap, (score, seq, run_id))

    def peek(self, valid: dict[str, int], rank: Callable[[str], int]) -> str | None:
        """The run whose turn it is: round-robin over fairness keys, among those whose head has the
        highest ``rank`` (aged priority). Entries no longer valid are discarded lazily."""
        self._discard_stale(valid)
        chosen, best = None, 0
        for fairness in self.turns:  # in turn order: among equals, whoever's turn comes first
            ranked = rank(self.groups[fairness][0][2])
            if chosen is None or ranked > best:
                chosen, best = fairness, ranked
        self._chosen = chosen
        return None if chosen is None else self.groups[chosen][0][2]

    def pop(self) -> None:
        """Remove the head returned by ``peek``; its fairness key goes to the back of the turns."""
        fairness = self._chosen
        assert fairness is not None, "pop follows a peek that found a run"
        heap = self.groups[fairness]
        heapq.heappop(heap)
        self.turns.remove(fairness)
        if heap:
            self.turns.append(fairness)
        else:
            del self.groups[fairness]
        self._chosen = None

    def _discard_stale(self, valid: dict[str, int]) -> None:
        for fairness in list(self.turns):
            heap = self.groups[fairness]
            while heap and valid.get(heap[0][2]) != heap[0][1]:
                heapq.heappop(heap)
            if not heap:
                self.turns.remove(fairness)
                del self.groups[fairness]


@dataclass
class KeyState:
    """One key: its limits (operator's over the latest task's), who runs, who waits."""

    key: str
    spec_max: int | None = None
    spec_rate: str | None = None
    operator: KeyLimit | None = None
    running: set[str] = field(default_factory=set)
    queue: FairQueue = field(default_factory=FairQueue)
    waiting: int = 0
    bucket: TokenBucket | None = None
    admitted_total: int = 0
    rate_waits_total: int = 0

    @property
    def max_concurrency(self) -> int | None:
        if self.operator is not None and self.operator.max_concurrency is not None:
            return self.operator.max_concurrency
        return self.spec_max

    @property
    def rate_limit(self) -> str | None:
        if self.operator is not None and self.operator.rate_limit is not None:
            return self.operator.rate_limit
        return self.spec_rate

    def blocked_by(self, now: float) -> str | None:
        """``concurrency:<key>`` when full, ``rate:<key>`` when out of tokens, else None."""
        limit = self.max_concurrency
        if limit is not None and len(self.running) >= limit:
            return f"concurrency:{self.key}"
        rate = self.rate_limit
        if rate is None:
            self.bucket = None
            return None
        per_second = parse_rate(rate)
        if self.bucket is None:
            self.bucket = TokenBucket(per_second, max(1.0, per_second), now)
        self.bucket.per_second = per_second
        self.bucket.refill(now)
        return None if self.bucket.has_token else f"rate:{self.key}"

    def view(self) -> LimitView:
        source: Literal["operator", "task", "none"] = (
            "operator" if self.operator is not None else "task" if self.spec_max or self.spec_rate else "none"
        )
        return LimitView(
            key=self.key,
            max_concurrency=self.max_concurrency,
            rate_limit=self.rate_limit,
            source=source,
            running=len(self.running),
            waiting=self.waiting,
            admitted_total=self.admitted_total,
            rate_waits_total=self.rate_waits_total,
        )


@dataclass
class _Entry:
    run: WaitingRun
    keys: list[str]
    queued_on: str
    seq: int
    score: float


class FlowState:
    """Every key, every permit held and every waiting run, as the leader knows them."""

    def __init__(self) -> None:
        self.keys: dict[str, KeyState] = {}
        self.permits: dict[str, Permit] = {}
        self.waiting: dict[str, _Entry] = {}
        self._valid: dict[str, int] = {}
        self._by_task: dict[str, set[str]] = {}
        self._backlogged: set[str] = set()
        self._seq = 0

    def key(self, name: str) -> KeyState:
        found = self.keys.get(name)
        if found is None:
            found = self.keys[name] = KeyState(name)
        return found

    def observe(self, spec: TaskSpec, keys: list[str]) -> None:
        """The latest task of a key sets its limits (an operator's limit still wins)."""
        for name in keys:
            state = self.key(name)
            state.spec_max = spec.max_concurrency if spec.concurrency_key is not None else None
            state.spec_rate = spec.rate_limit

    def offer(self, run: WaitingRun, now: float) -> str | None:
        """Admit ``run`` now (None: it holds its permits) or queue it (returns why it waits)."""
        keys = keys_of(run.spec, run.task_id)
        self.observe(run.spec, keys)
        for name in keys:  # a run never overtakes runs already waiting on one of its keys
            state = self.key(name)
            if state.waiting:
                return self._enqueue(run, keys, name, state.blocked_by(now) or f"concurrency:{name}")
        reason = self._blocker(keys, now)
        if reason is not None:
            return self._enqueue(run, keys, reason.split(":", 1)[1], reason)
        self._grant(run, keys, now)
        return None

    def restore_waiting(self, run: WaitingRun) -> None:
        """A waiting run read back from the bucket (a new leader)."""
        keys = keys_of(run.spec, run.task_id)
        self.observe(run.spec, keys)
        self._enqueue(run, keys, keys[0], None)

    def restore_permit(self, permit: Permit) -> None:
        """A permit read back from the bucket: its run still counts until its outcome is seen."""
        self.permits[permit.run_id] = permit
        for name in permit.keys:
            self.key(name).running.add(permit.run_id)

    def release(self, run_id: str, attempt: int) -> Permit | None:
        """The outcome of ``attempt`` was seen: free the run's permits (an older attempt frees nothing)."""
        permit = self.permits.get(run_id)
        if permit is None or attempt < permit.attempt:
            return None
        del self.permits[run_id]
        for name in permit.keys:
            self.key(name).running.discard(run_id)
        return permit

    def release_task(self, task_id: str) -> list[Permit]:
        """Free every permit of a deleted task (a runner acknowledges its runs without an outcome)."""
        found = [p for p in self.permits.values() if p.task_id == task_id]
        for permit in found:
            self.release(permit.run_id, permit.attempt)
        return found

    def drop_task(self, task_id: str) -> list[WaitingRun]:
        """A cancelled or deleted task's waiting runs, removed."""
        dropped = []
        for run_id in list(self._by_task.get(task_id, ())):
            entry = self._dequeue(run_id)
            if entry is not None:
                dropped.append(entry.run)
        return dropped

    def forget_waiting(self, run_id: str) -> WaitingRun | None:
        """Remove one waiting run (published by other means, or its wait was never saved)."""
        entry = self._dequeue(run_id)
        return None if entry is None else entry.run

    def admit_waiting(self, now: float, wall: float | None = None) -> tuple[list[WaitingRun], float | None]:
        """Runs that may go now (they hold their permits) and, if a rate holds some back, when to look again.

        ``now`` is monotonic (token buckets); ``wall`` is epoch seconds (how long runs have waited).
        """
        admitted: list[WaitingRun] = []
        wake_in: float | None = None
        wall = utcnow().timestamp() if wall is None else wall

        def rank(run_id: str) -> int:
            """Priority, one level more per AGING_SECONDS_PER_PRIORITY waited, at most the highest."""
            run = self.waiting[run_id].run
            waited = max(0.0, wall - run.since.timestamp())
            return min(bounds.MAX_PRIORITY, run.spec.priority + int(waited // AGING_SECONDS_PER_PRIORITY))

        for name in list(self._backlogged):
            state = self.keys[name]
            while (run_id := state.queue.peek(self._valid, rank)) is not None:
                entry = self.waiting[run_id]
                reason = self._blocker(entry.keys, now)
                if reason is None:
                    state.queue.pop()
                    self._dequeue(run_id)
                    self._grant(entry.run, entry.keys, now)
                    admitted.append(entry.run)
                    continue
                blocking = reason.split(":", 1)[1]
                if blocking != name:  # it waits on another key now: queue it there, keep its rank
                    state.queue.pop()
                    self._dequeue(run_id)
                    self._enqueue(entry.run, entry.keys, blocking, None, score=entry.score)
                    wake_in = 0.0  # its new key may already be in the loop's past
                    continue
                if reason.startswith("rate:") and state.bucket is not None:
                    state.rate_waits_total += 1
                    delay = state.bucket.seconds_to_token()
                    wake_in = delay if wake_in is None else min(wake_in, delay)
                break
        return admitted, wake_in

    def prune(self, now: float) -> int:
        """Forget idle per-task keys (``task:<id>``) whose bucket is full again; returns how many."""
        idle = [
            name
            for name, state in self.keys.items()
            if name.startswith("task:")
            and not state.running
            and not state.waiting
            and state.operator is None
            and (state.bucket is None or _refilled(state.bucket, now))
        ]
        for name in idle:
            del self.keys[name]
        return len(idle)

    def forget_if_idle(self, name: str) -> None:
        """Drop a key nobody limits, runs or waits on (an operator cleared a key no task uses)."""
        state = self.keys.get(name)
        if state is not None and state.view().source == "none" and not state.running and not state.waiting:
            del self.keys[name]

    def views(self) -> list[LimitView]:
        """Every key known, by name."""
        return [self.keys[name].view() for name in sorted(self.keys)]

    # --- internals ----------------------------------------------------------------------------

    def _blocker(self, keys: list[str], now: float) -> str | None:
        reasons = [self.key(name).blocked_by(now) for name in keys]
        return next((r for r in reasons if r is not None), None)

    def _grant(self, run: WaitingRun, keys: list[str], now: float) -> None:
        for name in keys:
            state = self.key(name)
            state.running.add(run.run_id)
            state.admitted_total += 1
            if state.bucket is not None:
                state.bucket.tokens -= 1.0
        self.permits[run.run_id] = Permit(
            task_id=run.task_id, run_id=run.run_id, attempt=run.attempt, keys=keys, granted_at=utcnow()
        )

    def _enqueue(
        self, run: WaitingRun, keys: list[str], on: str, reason: str | None, score: float | None = None
    ) -> str | None:
        self._seq += 1
        if score is None:
            score = run.since.timestamp() - (run.spec.priority - 3) * AGING_SECONDS_PER_PRIORITY
        entry = _Entry(run=run, keys=keys, queued_on=on, seq=self._seq, score=score)
        self.waiting[run.run_id] = entry
        self._valid[run.run_id] = entry.seq
        self._by_task.setdefault(run.task_id, set()).add(run.run_id)
        state = self.key(on)
        state.queue.push(run.spec.fairness_key or "", score, entry.seq, run.run_id)
        state.waiting += 1
        self._backlogged.add(on)
        return reason

    def _dequeue(self, run_id: str) -> _Entry | None:
        entry = self.waiting.pop(run_id, None)
        if entry is None:
            return None
        self._valid.pop(run_id, None)
        runs_of_task = self._by_task.get(entry.run.task_id)
        if runs_of_task is not None:
            runs_of_task.discard(run_id)
            if not runs_of_task:
                del self._by_task[entry.run.task_id]
        state = self.keys[entry.queued_on]
        state.waiting -= 1
        if not state.waiting:
            self._backlogged.discard(entry.queued_on)
        return entry
