"""The store's on-disk catalog of every retained task: what lists, filters, counts and sweeps read.

SQLite (standard library, WAL mode) rather than another bucket or an in-memory index: lists by
status, name prefix and time need secondary indexes that KV does not have, an in-memory index
grows with history (the reason this exists), and an embedded database keeps them on disk with
page-cache memory bounded by a setting. The catalog is *derived* state: KV stays the truth, the
catalog is written behind it in batches (after the KV writes of the same batch), and it is
rebuilt from KV when it is missing, corrupt, or of another schema version.

Corruption is looked for without delaying a start: SQLite survives a killed process intact (WAL),
so only a disk fault damages the file, and reading all of it (``PRAGMA quick_check``, seconds at a
million tasks) would make a restart cost O(history). An unreadable header fails the open; a
damaged page is found by ``check`` in the background after the store serves, or by the query
that meets it. Either marks the file damaged (``mark_damaged``), and the next open makes it anew.

A row may run ahead of KV: a list or a count right after an answer shows what memory knows,
before the flush writes it. Such rows are marked *unconfirmed* (with the status their row had
before), and the flush that writes the same state to KV confirms them. A start checks every mark
against KV: a store killed in between must not find a task final that KV still holds running
(it would never load it, and would drop its replayed outcome as stale).

One row per task: the columns lists filter on, nothing else (the records stay in KV). Counts by
status, kind and trigger are kept by triggers in the same transactions, so reading them never
scans. Task ids are UUIDv7 and sort by creation time: "newest first" is the primary key, descending.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

from proto.records import TaskRecord
from proto.tasks import FINAL_STATUSES

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
"""Bumped whenever the tables change: a catalog of another version is rebuilt from KV."""

_SCHEMA = """
CREATE TABLE tasks (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    kind TEXT NOT NULL,
    task_type TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    finished_us INTEGER,
    final INTEGER NOT NULL,
    idempotency_key TEXT
) WITHOUT ROWID;
CREATE INDEX tasks_by_status ON tasks (status, id);
CREATE INDEX tasks_by_name ON tasks (name, id);
CREATE INDEX tasks_active ON tasks (id) WHERE final = 0;
CREATE INDEX tasks_schedules ON tasks (id) WHERE task_type = 'scheduled';
CREATE INDEX tasks_expiring ON tasks (finished_us) WHERE finished_us IS NOT NULL;
CREATE INDEX tasks_by_key ON tasks (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE counts (dimension TEXT NOT NULL, value TEXT NOT NULL, n INTEGER NOT NULL,
                     PRIMARY KEY (dimension, value)) WITHOUT ROWID;
CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;
CREATE TABLE deleted (id TEXT PRIMARY KEY, deleted_us INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX deleted_by_time ON deleted (deleted_us);
CREATE TRIGGER tasks_insert AFTER INSERT ON tasks BEGIN
    INSERT INTO counts VALUES ('status', NEW.status, 1), ('kind', NEW.kind, 1), ('trigger', NEW.task_type, 1)
        ON CONFLICT DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER tasks_delete AFTER DELETE ON tasks BEGIN
    UPDATE counts SET n = n - 1 WHERE (dimension = 'status' AND value = OLD.status)
        OR (dimension = 'kind' AND value = OLD.kind) OR (dimension = 'trigger' AND value = OLD.task_type);
END;
CREATE TRIGGER tasks_move AFTER UPDATE OF status ON tasks WHEN OLD.status != NEW.status BEGIN
    UPDATE counts SET n = n - 1 WHERE dimension = 'status' AND value = OLD.status;
    INSERT INTO counts VALUES ('status', NEW.status, 1) ON CONFLICT DO UPDATE SET n = n + 1;
END;
"""

_ADDED_IN_PLACE = """
CREATE TABLE IF NOT EXISTS unconfirmed (id TEXT PRIMARY KEY, status TEXT) WITHOUT ROWID;
"""
"""Tables added after schema version 1 that an older catalog gains at open (no rebuild): the
rows ahead of KV, each with the status its row had when it was last confirmed (NULL: no row)."""

_MARK = "INSERT OR IGNORE INTO unconfirmed (id, status) VALUES (?, (SELECT status FROM tasks WHERE id = ?))"


class Row(NamedTuple):
    """A task's row in the tasks table, in column order (``catalog_row``)."""

    id: str
    name: str
    status: str
    kind: str
    task_type: str
    created_us: int
    finished_us: int | None
    final: int
    idempotency_key: str | None


_UPSERT = """
INSERT INTO tasks (id, name, status, kind, task_type, created_us, finished_us, final, idempotency_key)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET status = excluded.status, finished_us = excluded.finished_us,
    final = excluded.final
WHERE tasks.status != excluded.status OR tasks.finished_us IS NOT excluded.finished_us
"""

DENSE_MATCHES = 2000
"""A name prefix matching more tasks than this is served by walking ids (matches are dense)."""


@dataclass(frozen=True)
class ListFilter:
    """What a list asks for; every field optional."""

    status: str | None = None
    kind: str | None = None
    task_type: str | None = None
    name_prefix: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


def _damage_marker(path: Path) -> Path:
    return Path(f"{path}.damaged")


class CatalogUnusable(Exception):
    """The catalog file cannot be used (corrupt, another version): rebuild it from KV."""


class CatalogClosed(Exception):
    """A write came after ``close`` (a flush's commit in a worker thread as the store stops)."""


CHECKPOINT_SECONDS = 1.0
"""How often the store copies the WAL into the database file (``checkpoint``), off its event loop.
SQLite's own checkpoint (every 1,000 pages, inside the commit that crosses them) stopped the
store's loop for 4–5 ms in a flush that otherwise took 0.2 (bench/README, "event loop stops")."""


class Catalog:
    """The tasks table and its counts, in one SQLite file."""

    def __init__(self, path: Path | str, cache_mb: int = 16) -> None:
        self.path = Path(path) if path != ":memory:" else path
        self.cache_mb = cache_mb
        self.db = self._open()
        """The connection that writes (from one thread at a time: ``_writing``)."""
        self.reader = self.db
        """The connection every read uses. A file's has its own, so that a read never waits for a
        commit in a worker thread, nor sees one half done: WAL gives it the last committed state."""
        if self.on_disk:
            try:
                self.reader = self._open_reader()
            except sqlite3.DatabaseError as exc:
                self.db.close()
                raise CatalogUnusable(str(exc)) from exc
        self._writing = threading.Lock()
        self._checkpointer: sqlite3.Connection | None = None
        """A connection of ``checkpoint``'s own, used by one thread at a time (``_checkpointing``)."""
        self._checkpointing = threading.Lock()
        self._closed = False

    @property
    def on_disk(self) -> bool:
        """A file (its commits may run in a worker thread), not a database in memory (tests)."""
        return isinstance(self.path, Path)

    def _cache_kib(self) -> int:
        # a file's budget is shared by its two connections (the writer and the reader)
        return self.cache_mb * 1024 // (2 if self.on_disk else 1)

    def _open(self) -> sqlite3.Connection:
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        try:
            db.execute("PRAGMA journal_mode = WAL")
            # NORMAL: a power cut may lose the last transactions, never corrupt; the catalog trails KV anyway.
            db.execute("PRAGMA synchronous = NORMAL")
            db.execute(f"PRAGMA cache_size = -{self._cache_kib()}")
            db.execute("PRAGMA temp_store = MEMORY")
            # commits never checkpoint: the store calls checkpoint() from a worker thread instead
            db.execute("PRAGMA wal_autocheckpoint = 0")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            has_tables = db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'tasks'").fetchone()[0]
            if not has_tables:
                db.executescript(_SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
                self.created = True
            elif version != SCHEMA_VERSION:
                raise CatalogUnusable(f"catalog schema version {version}, this store uses {SCHEMA_VERSION}")
            else:
                self.created = False
            db.executescript(_ADDED_IN_PLACE)
        except sqlite3.DatabaseError as exc:
            db.close()
            raise CatalogUnusable(str(exc)) from exc
        except CatalogUnusable:
            db.close()
            raise
        return db

    def _connect(self) -> sqlite3.Connection:
        # autocommit (transactions are explicit); usable from the worker threads that commit and checkpoint
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)

    def _open_reader(self) -> sqlite3.Connection:
        reader = self._connect()
        reader.execute(f"PRAGMA cache_size = -{self._cache_kib()}")
        reader.execute("PRAGMA temp_store = MEMORY")
        return reader

    @classmethod
    def open_or_reset(cls, path: Path, cache_mb: int = 16) -> Catalog:
        """Open the catalog; an unusable or damaged one is deleted and made anew (``created`` then says so)."""
        marker = _damage_marker(path)
        try:
            if marker.exists():
                raise CatalogUnusable(marker.read_text(errors="replace") or "marked damaged")
            return cls(path, cache_mb)
        except CatalogUnusable as exc:
            log.warning("catalog %s unusable (%s): rebuilding it from KV", path, exc)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            marker.unlink(missing_ok=True)
            return cls(path, cache_mb)

    def check(self) -> str | None:
        """SQLite's ``quick_check`` of the whole file on a connection of its own (it reads every
        page: run it off the event loop); None when sound, else what is wrong."""
        if not isinstance(self.path, Path):
            return None
        try:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
            try:
                found = [row[0] for row in db.execute("PRAGMA quick_check(5)").fetchall()]
            finally:
                db.close()
        except sqlite3.DatabaseError as exc:
            return str(exc)
        return None if found == ["ok"] else "; ".join(found)

    def mark_damaged(self, reason: str) -> None:
        """Have the next open make the catalog anew (KV holds everything it derives from)."""
        if isinstance(self.path, Path):
            _damage_marker(self.path).write_text(reason)

    def checkpoint(self) -> tuple[int, int]:
        """Copy what the WAL holds into the database file (SQLite's PASSIVE checkpoint: it waits
        for no reader or writer) on a connection of its own: run it off the event loop, one call
        at a time. Returns the WAL's frames and how many of them are now in the database file."""
        if not self.on_disk:
            return 0, 0
        with self._checkpointing:
            if self._closed:
                return 0, 0
            if self._checkpointer is None:
                self._checkpointer = self._connect()
            _, frames, copied = self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return max(frames, 0), max(copied, 0)

    def close(self) -> None:
        """Close the file (safe twice; closing the last connection checkpoints what is left).
        Waits for a commit or checkpoint in progress: its thread must not find its connection closed."""
        with self._writing, self._checkpointing:
            self._closed = True
            if self._checkpointer is not None:
                self._checkpointer.close()
            if self.reader is not self.db:
                self.reader.close()
            self.db.close()

    # --- writing ------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN … COMMIT, or ROLLBACK on an error (the connection is in autocommit mode), by one
        thread at a time: the store commits from a worker thread, and the loop may write too."""
        with self._writing:
            if self._closed:
                raise CatalogClosed("the catalog is closed")
            self.db.execute("BEGIN")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def commit(
        self,
        tasks: Iterable[TaskRecord] = (),
        removed: Iterable[str] = (),
        meta: dict[str, bytes] | None = None,
        *,
        rows: Iterable[Row] = (),
        ahead: bool = False,
        confirmed: Iterable[str] = (),
    ) -> None:
        """Write a batch in one transaction: changed tasks (as records or as ``rows``), removed
        ids, and meta values.

        ``ahead``: these tasks and removals are not in KV yet; each is marked unconfirmed.
        ``confirmed``: ids whose state KV now holds as committed here; their marks go.
        """
        upserts = [*rows, *(catalog_row(task) for task in tasks)]
        gone = [(task_id,) for task_id in removed]
        with self._transaction():
            if ahead:
                self.db.executemany(_MARK, [(row.id, row.id) for row in upserts] + [(t, t) for (t,) in gone])
            if upserts:
                self.db.executemany(_UPSERT, upserts)
            if gone:
                self.db.executemany("DELETE FROM tasks WHERE id = ?", gone)
                now = _us(datetime.now(UTC))
                self.db.executemany("INSERT OR IGNORE INTO deleted VALUES (?, ?)", [(t, now) for (t,) in gone])
            marks = [(task_id,) for task_id in confirmed]
            if marks:
                self.db.executemany("DELETE FROM unconfirmed WHERE id = ?", marks)
            for key, value in (meta or {}).items():
                self.db.execute(
                    "INSERT INTO meta VALUES (?, ?) ON CONFLICT DO UPDATE SET value = excluded.value", (key, value)
                )

    def confirm_from_kv(
        self,
        found: Iterable[TaskRecord],
        deleted: Iterable[str],
        absent: Iterable[str],
    ) -> None:
        """Make every unconfirmed row what KV holds, in one transaction, and drop the marks.

        ``found``: records KV holds; ``deleted``: ids KV holds a delete marker for; ``absent``:
        ids KV never had (accepted and shown, not yet written when the store stopped).
        """
        rows = [catalog_row(task) for task in found]
        with self._transaction():
            if rows:
                self.db.executemany(_UPSERT, rows)
                self.db.executemany("DELETE FROM deleted WHERE id = ?", [(row.id,) for row in rows])
            now = _us(datetime.now(UTC))
            for task_id in deleted:
                self.db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
                self.db.execute("INSERT OR IGNORE INTO deleted VALUES (?, ?)", (task_id, now))
            for task_id in absent:
                self.db.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
                self.db.execute("DELETE FROM deleted WHERE id = ?", (task_id,))
            self.db.execute("DELETE FROM unconfirmed")

    def clear(self) -> None:
        """Forget every task (before a rebuild); deletions still marked in KV are kept."""
        with self._transaction():
            self.db.execute("DELETE FROM tasks")
            self.db.execute("DELETE FROM counts")
            self.db.execute("DELETE FROM meta")
            self.db.execute("DELETE FROM unconfirmed")

    def deleted_before(self, cutoff: datetime, limit: int) -> list[str]:
        """Deleted tasks whose delete markers in KV are older than ``cutoff``."""
        rows = self.reader.execute(
            "SELECT id FROM deleted WHERE deleted_us < ? ORDER BY deleted_us LIMIT ?", (_us(cutoff), limit)
        )
        return [row[0] for row in rows]

    def forget_deleted(self, task_ids: Iterable[str]) -> None:
        """The delete markers of these tasks are gone from KV."""
        with self._transaction():
            self.db.executemany("DELETE FROM deleted WHERE id = ?", [(t,) for t in task_ids])

    def deleted_count(self) -> int:
        """Deleted tasks whose markers KV still holds."""
        return self.reader.execute("SELECT count(*) FROM deleted").fetchone()[0]

    # --- reading ------------------------------------------------------------------------------

    def get_meta(self, key: str) -> bytes | None:
        row = self.reader.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def __len__(self) -> int:
        return sum(self.counts("trigger").values())

    def counts(self, dimension: str) -> dict[str, int]:
        """Tasks per status, kind or trigger (``dimension``), from the kept counts."""
        rows = self.reader.execute(
            "SELECT value, n FROM counts WHERE dimension = ? AND n > 0 ORDER BY value", (dimension,)
        )
        return dict(rows.fetchall())

    def status_of(self, task_id: str) -> str | None:
        """The task's status as catalogued, or None when the catalog does not know it."""
        row = self.reader.execute("SELECT status FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return row[0] if row else None

    def unconfirmed(self) -> dict[str, str | None]:
        """Rows ahead of KV, by id: the status each had when last confirmed (None: no row then)."""
        return dict(self.reader.execute("SELECT id, status FROM unconfirmed").fetchall())

    def task_for_key(self, idempotency_key: str) -> str | None:
        """The task submitted with this idempotency key, if one is retained."""
        row = self.reader.execute(
            "SELECT id FROM tasks WHERE idempotency_key = ? ORDER BY id LIMIT 1", (idempotency_key,)
        ).fetchone()
        return row[0] if row else None

    def active_ids(self) -> list[str]:
        """Tasks that are not final (what the store keeps in memory)."""
        return [row[0] for row in self.reader.execute("SELECT id FROM tasks WHERE final = 0")]

    def schedule_ids(self) -> list[str]:
        """Every retained scheduled task, newest first."""
        return [
            row[0] for row in self.reader.execute("SELECT id FROM tasks WHERE task_type = 'scheduled' ORDER BY id DESC")
        ]

    def finished_before(self, cutoff: datetime, limit: int) -> list[str]:
        """Up to ``limit`` one-shot tasks that finished before ``cutoff``, oldest first."""
        rows = self.reader.execute(
            "SELECT id FROM tasks WHERE finished_us IS NOT NULL AND finished_us < ? ORDER BY finished_us LIMIT ?",
            (_us(cutoff), limit),
        )
        return [row[0] for row in rows]

    def page(self, where: ListFilter, before: str | None, limit: int) -> tuple[list[str], str | None]:
        """Up to ``limit`` task ids, newest first, older than cursor ``before``; and the next cursor."""
        clauses: list[str] = []
        params: list[object] = []
        if before is not None:
            clauses.append("id < ?")
            params.append(before)
        for column, value in (("status", where.status), ("kind", where.kind), ("task_type", where.task_type)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        if where.created_after is not None:
            clauses.append("id >= ? AND created_us >= ?")
            params += [_id_floor(where.created_after), _us(where.created_after)]
        if where.created_before is not None:
            clauses.append("id < ? AND created_us < ?")
            params += [_id_ceiling(where.created_before), _us(where.created_before)]
        if where.name_prefix:
            low, high = where.name_prefix, _after_prefix(where.name_prefix)
            # A rare prefix is found through the name index (then sorted); a common one by walking
            # ids newest first, where matches come soon. "+name" keeps SQLite off the name index.
            column = "name" if self._matches_at_most(low, high, DENSE_MATCHES) else "+name"
            clauses.append(f"{column} >= ?" + (f" AND {column} < ?" if high is not None else ""))
            params += [low] + ([high] if high is not None else [])
        sql = "SELECT id FROM tasks" + (" WHERE " + " AND ".join(clauses) if clauses else "")
        sql += " ORDER BY id DESC LIMIT ?"
        ids = [row[0] for row in self.reader.execute(sql, (*params, limit + 1))]
        if len(ids) > limit:
            return ids[:limit], ids[limit - 1]
        return ids, None

    def _matches_at_most(self, low: str, high: str | None, bound: int) -> bool:
        sql = "SELECT count(*) FROM (SELECT 1 FROM tasks WHERE name >= ?" + (" AND name < ?" if high else "")
        found = self.reader.execute(sql + " LIMIT ?)", (low, *([high] if high else []), bound + 1)).fetchone()[0]
        return found <= bound

    def ids(self) -> Iterator[str]:
        """Every catalogued id (for checks against KV)."""
        for row in self.reader.execute("SELECT id FROM tasks"):
            yield row[0]


def catalog_row(task: TaskRecord) -> Row:
    """The task's row as it is now (taken with the record's encoding, it is what KV will hold)."""
    final = task.status in FINAL_STATUSES
    expires = final and task.task_type != "scheduled" and task.finished_at is not None
    return Row(
        task.id,
        task.name,
        task.status,
        task.kind,
        task.task_type,
        _us(task.created_at),
        _us(task.finished_at) if expires and task.finished_at else None,
        int(final),
        task.idempotency_key,
    )


def _us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def _id_floor(moment: datetime) -> str:
    """The smallest UUIDv7 string of a task created at or after ``moment`` (millisecond resolution)."""
    hex_ms = f"{int(moment.timestamp() * 1000):012x}"
    return f"{hex_ms[:8]}-{hex_ms[8:]}"


def _id_ceiling(moment: datetime) -> str:
    """A string above every UUIDv7 of a task created before ``moment``."""
    hex_ms = f"{int(moment.timestamp() * 1000) + 1:012x}"
    return f"{hex_ms[:8]}-{hex_ms[8:]}"


def _after_prefix(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: no such string)."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return None
    following = last + 1 if last + 1 != 0xD800 else 0xE000  # surrogates are no characters in UTF-8
    return prefix[:-1] + chr(following)
