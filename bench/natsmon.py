"""nats-server seen from inside: /varz, /jsz per stream, and its Go heap by allocating function (pprof)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.procs import _own_session
from taskmesh.processes import NATS_CONFIG, NatsServer, free_port, nats_server_binary

HEAP_SAMPLE_BYTES = 512 * 1024
"""Go's default MemProfileRate: the debug=1 heap profile lists sampled allocations, unscaled."""
_RECORD = re.compile(r"^(\d+): (\d+) \[(\d+): (\d+)\] @")
_FRAME = re.compile(r"^#\s+0x[0-9a-f]+\s+(\S+)")
_MEMSTAT = re.compile(r"^# (\w+) = (\d+)")


@dataclass
class ProfiledNatsServer(NatsServer):
    """The harness's nats-server, plus Go's pprof endpoints on ``profile_port`` (heap attribution)."""

    profile_port: int = 0

    def start(self, timeout: float = 10.0) -> ProfiledNatsServer:
        # NatsServer.start with one more config line; kept in bench so the product's launcher stays as it is
        self.port, self.monitor_port = self.port or free_port(), self.monitor_port or free_port()
        self.profile_port = self.profile_port or free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_path or self.data_dir / "nats-server.log"
        config = self.data_dir / "taskmesh-nats.conf"
        config.write_text(f"{NATS_CONFIG}prof_port: {self.profile_port}\n")
        env = dict(os.environ)
        if os.environ.get("TASKMESH_NATS_MEMORY_LIMIT"):
            env["GOMEMLIMIT"] = os.environ["TASKMESH_NATS_MEMORY_LIMIT"]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    nats_server_binary(),
                    "-c",
                    str(config),
                    "-js",
                    "-sd",
                    str(self.data_dir),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-m",
                    str(self.monitor_port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=_own_session,
            )
        self.wait_ready(timeout)
        return self


def _get(url: str, timeout_s: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return response.read()


def varz(nats: NatsServer) -> dict:
    """The server's own figures: ``mem`` (RSS, bytes), ``cpu``, JetStream memory/store use."""
    body = json.loads(_get(f"http://127.0.0.1:{nats.monitor_port}/varz"))
    jetstream = body.get("jetstream", {}).get("stats", {})
    return {
        "mem": body.get("mem"),
        "cpu": body.get("cpu"),
        "js_memory": jetstream.get("memory"),
        "js_storage": jetstream.get("storage"),
        "subscriptions": body.get("subscriptions"),
    }


def streams(nats: NatsServer) -> dict[str, dict]:
    """Per stream: messages, bytes, unique subjects, interior deletes, consumers, max_age and dedup window."""
    body = json.loads(_get(f"http://127.0.0.1:{nats.monitor_port}/jsz?streams=true&consumers=true&config=true"))
    found: dict[str, dict] = {}
    for account in body.get("account_details", []):
        for stream in account.get("stream_detail", []):
            state, config = stream.get("state", {}), stream.get("config", {})
            found[stream["name"]] = {
                "messages": state.get("messages"),
                "bytes": state.get("bytes"),
                "num_subjects": state.get("num_subjects"),
                "num_deleted": state.get("num_deleted"),
                "consumers": len(stream.get("consumer_detail") or []),
                "max_age_s": (config.get("max_age") or 0) / 1e9,
                "duplicate_window_s": (config.get("duplicate_window") or 0) / 1e9,
                "max_bytes": config.get("max_bytes"),
            }
    return found


CATEGORIES = (
    ("block caches", ("getMsgBlockBuf",)),
    ("per-subject state", ("/stree.",)),
    ("dedup ids", ("storeMsgIdLocked", "getMsgId", "(*stream).ddload")),
)
"""Heap attributed by a frame anywhere in the allocating stack, first match wins; the rest by its innermost
server function."""


def heap(nats: ProfiledNatsServer, top: int = 15) -> dict:
    """Go heap in use by category and by allocating nats-server function (scaled from samples), and MemStats."""
    text = _get(f"http://127.0.0.1:{nats.profile_port}/debug/pprof/heap?debug=1").decode(errors="replace")
    by_function: dict[str, float] = {}
    by_category: dict[str, float] = {}
    memstats: dict[str, int] = {}
    size, stack = 0.0, []

    def close_record() -> None:
        if size <= 0 or not stack:
            return
        category = next((name for name, marks in CATEGORIES if any(m in f for m in marks for f in stack)), "other")
        by_category[category] = by_category.get(category, 0.0) + size
        innermost = next((f for f in stack if "nats-server" in f and ".init." not in f and "stree" not in f), stack[0])
        by_function[_short(innermost)] = by_function.get(_short(innermost), 0.0) + size

    for line in text.splitlines():
        record = _RECORD.match(line)
        if record:
            close_record()
            size, stack = _scaled(int(record.group(1)), int(record.group(2))), []
            continue
        frame = _FRAME.match(line)
        if frame:
            stack.append(frame.group(1))
            continue
        stat = _MEMSTAT.match(line)
        if stat:
            memstats[stat.group(1)] = int(stat.group(2))
    close_record()
    ranked = sorted(by_function.items(), key=lambda item: -item[1])[:top]
    keep = ("HeapAlloc", "HeapInuse", "HeapIdle", "HeapReleased", "HeapSys", "Sys", "NumGC", "HeapObjects", "NextGC")
    return {
        "memstats": {key: memstats.get(key) for key in keep},
        "categories_mib": {
            name: round(value / 2**20, 1) for name, value in sorted(by_category.items(), key=lambda item: -item[1])
        },
        "top_inuse_mib": [(name, round(value / 2**20, 1)) for name, value in ranked],
    }


def _scaled(objects: int, size: int) -> float:
    """Undo heap sampling, as pprof does: each sampled byte stands for 1/(1-e^(-avg/rate)) bytes."""
    if objects == 0:
        return 0.0
    average = size / objects
    return size / (1 - math.exp(-average / HEAP_SAMPLE_BYTES))


def _short(function: str) -> str:
    return function.replace("github.com/nats-io/nats-server/v2/", "").split("+")[0]


def disk_bytes(path: Path) -> int:
    """Bytes on disk under ``path`` (du: allocated blocks, as the issue measured)."""
    try:
        out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, timeout=120).stdout
        return int(out.split()[0]) * 1024
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return 0
