"""Runs inside a sandbox container (``python3 -I -u -c <this file>``); standard library only.

It waits for two lines on stdin (so a container can be started ahead of time): a header with the
result frame's nonce and bounds, then the payload. It runs the user's function (or makes the
HTTP request of an isolated API task) and writes one result frame on stdout:
``<nonce><json>\\n``. Arguments and results cross as JSON data; nothing the user sent is ever
spliced into source code or a command line. User output goes to stdout/stderr as usual.

Why two processes: the frame is trusted only because user code cannot know the nonce, and
in-process Python can reach every object (frames, ``gc.get_objects()``, its own memory through
``/proc/self/mem``). So the process that starts forks FIRST, before a byte is read: the child
(which later runs user code) never had the nonce in its memory. The parent then makes itself
non-dumpable (``PR_SET_DUMPABLE`` 0: with every capability dropped, another process of the same
user can no longer open its ``/proc/<pid>/{mem,fd}`` or ptrace it), reads the header and the
payload, hands the payload to the child over a pipe, and receives the child's outcome over
another pipe as length-prefixed data. The parent never runs user code: it re-checks that data
(JSON, bounds, known error types) and frames it itself, so whatever user code writes into that
pipe can claim no more than a return value or an exception could. When the child ends without
an outcome the parent exits like it did (code, or 128 + signal), so the runner reports OOM,
signals and exit codes as before.
"""

import builtins
import json
import linecache
import os
import select
import signal
import struct
import sys
import time
import traceback
import types

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing, asyncio and inspect cost ~30 ms of CPU at every sandbox's start: imported only when used
    from typing import Any

TASK_FILE = "task.py"
MESSAGE_CAP = 65536
"""Characters kept of a user exception's message, and of its traceback (the rest is cut)."""
TRACEBACK_CAP = 65536
LENGTH = struct.Struct(">Q")
ERROR_TYPES = {
    "code": ("exception", "function_not_found", "invalid_result", "result_too_large"),
    "api": ("exception", "timed_out", "http_error", "invalid_result", "result_too_large"),
}
"""The error types the child may report, by mode; anything else is not believed."""


def _capped(text, limit):
    if not isinstance(text, str):
        return ""
    if len(text) <= limit:
        return text
    return text[:limit] + "\n... [truncated: %d more characters]" % (len(text) - limit)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _user_traceback(exc):
    frames = traceback.extract_tb(exc.__traceback__)
    while frames and frames[0].filename != TASK_FILE:
        frames.pop(0)  # the harness's frames come first: they are not the user's business
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def _exception(exc, error_type="exception"):
    try:
        text = str(exc)
    except Exception:  # a __str__ that fails must not lose the run's outcome
        text = "<unprintable message>"
    try:
        trace = _user_traceback(exc)
    except Exception:
        trace = ""
    name = type(exc).__name__
    return {
        "ok": False,
        "error": {
            "type": error_type,
            "exc_type": name,
            "message": _capped("%s: %s" % (name, text) if text else name, MESSAGE_CAP),
            "traceback": _capped(trace, TRACEBACK_CAP),
        },
    }


def _call(payload):
    source = payload["code"]
    linecache.cache[TASK_FILE] = (len(source), None, source.splitlines(True), TASK_FILE)
    try:
        code = compile(source, TASK_FILE, "exec")
    except SyntaxError as exc:
        return _exception(exc)
    namespace = {"__name__": "__task__", "__builtins__": builtins, "__file__": TASK_FILE}
    try:
        exec(code, namespace)
    except BaseException as exc:
        return _exception(exc)
    function = namespace.get(payload["function"])
    if not callable(function):
        return {
            "ok": False,
            "error": {
                "type": "function_not_found",
                "message": ("function_code defines no callable %r" % payload["function"]),
            },
        }
    try:
        value = function(*payload.get("args", []), **payload.get("kwargs", {}))
        if hasattr(type(value), "__await__") or isinstance(value, types.GeneratorType):  # might be awaitable
            value = _awaited(value)
    except BaseException as exc:
        return _exception(exc)
    return {"ok": True, "result": value}


def _awaited(value):
    """What an async function's result resolves to; anything else unchanged."""
    import inspect

    if not inspect.isawaitable(value):
        return value
    import asyncio

    async def wait_for(awaitable):
        return await awaitable

    return asyncio.run(wait_for(value))


def _request(payload):
    request = payload["request"]
    body = request.get("body")
    data = body.encode("utf-8") if isinstance(body, str) else None
    started = time.perf_counter()
    try:
        import requests  # the seed's default requirement for isolated API tasks
    except ImportError:
        requests = None  # type: ignore[assignment]  # optional inside a sandbox: urllib is the fallback
    try:
        if requests is not None:
            response = requests.request(
                request["method"],
                request["url"],
                headers=request["headers"],
                data=data,
                timeout=request["timeout"],
                allow_redirects=False,
            )
            status, reason, headers, content = (
                response.status_code,
                response.reason,
                dict(response.headers),
                response.content,
            )
        else:
            import urllib.error
            import urllib.request

            class _NoRedirects(urllib.request.HTTPRedirectHandler):
                def redirect_request(self, *args, **kwargs):
                    return None  # like requests' allow_redirects=False: the 3xx is the result

            # the proxy from the environment (the runner's egress proxy) and no redirects followed
            opener = urllib.request.build_opener(urllib.request.ProxyHandler(), _NoRedirects())
            req = urllib.request.Request(
                request["url"], data=data, method=request["method"], headers=request["headers"]
            )
            try:
                with opener.open(req, timeout=request["timeout"]) as response:
                    status, reason, headers, content = (
                        response.status,
                        response.reason,
                        dict(response.headers),
                        response.read(),
                    )
            except urllib.error.HTTPError as exc:
                status, reason, headers, content = exc.code, exc.reason, dict(exc.headers), exc.read()
    except BaseException as exc:
        timed_out = "timeout" in type(exc).__name__.lower() or "timed out" in str(exc).lower()
        return _exception(exc, "timed_out" if timed_out else "http_error")
    elapsed_ms = round((time.perf_counter() - started) * 1000, 3)
    cap = payload.get("body_cap", 262144)
    truncated = len(content) > cap
    content = content[:cap]
    text = content.decode("utf-8", errors="replace")
    decoded = text
    if not truncated and text[:1] in ("{", "["):
        try:
            decoded = json.loads(text)
        except ValueError:
            pass
    result = {"status_code": status, "headers": headers, "body": decoded, "elapsed_ms": elapsed_ms}
    if truncated:
        result["body_truncated"] = True
    sys.stderr.write(
        "%s %s -> %s %s in %.1f ms\n" % (request["method"], request["log_url"], status, reason, elapsed_ms)
    )
    return {"ok": True, "result": result, "reason": reason}


def _jsonable(value, depth=0):
    """The return value as plain JSON types. Data libraries' values are converted the way their
    own to-JSON methods do (numpy scalars and arrays, pandas objects, dates, sets; NaN -> null);
    anything else raises TypeError, naming the type."""
    if depth > 100:
        raise ValueError("the return value is nested more than 100 levels deep")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {_key(k): _jsonable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v, depth + 1) for v in value]
    if hasattr(value, "isoformat") and callable(value.isoformat):
        return value.isoformat()
    kind = type(value).__module__.split(".")[0]
    if kind == "numpy" and hasattr(value, "tolist"):
        return _jsonable(value.tolist(), depth + 1)
    if kind == "pandas" and hasattr(value, "to_dict"):
        return _jsonable(value.to_dict(), depth + 1)
    if type(value).__name__ == "Decimal":
        return _jsonable(float(value), depth + 1)
    raise TypeError(
        "a value of type %s.%s cannot be returned as JSON" % (type(value).__module__, type(value).__qualname__)
    )


def _key(key):
    if isinstance(key, str):
        return key
    if isinstance(key, (bool, int, float)) or key is None:
        return json.dumps(key)
    if hasattr(key, "isoformat") and callable(key.isoformat):
        return key.isoformat()
    converted = _jsonable(key)
    return converted if isinstance(converted, str) else json.dumps(converted)


def _finished(frame, payload):
    """The child's outcome with the return value made JSON and checked against the result cap."""
    if not frame.get("ok"):
        return frame
    try:
        frame["result"] = _jsonable(frame["result"])
        encoded = json.dumps(frame["result"], allow_nan=False)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        return {
            "ok": False,
            "error": {
                "type": "invalid_result",
                "message": _capped(
                    "the return value is not JSON-serialisable: %s: %s" % (type(exc).__name__, exc), MESSAGE_CAP
                ),
            },
        }
    cap = payload.get("result_cap", 524288)
    if len(encoded) > cap:
        return {
            "ok": False,
            "error": {
                "type": "result_too_large",
                "message": ("the return value is %d bytes of JSON; the limit is %d" % (len(encoded), cap)),
            },
        }
    return frame


def _child(payload_fd, result_fd):
    """Read the payload from the parent, run it, send the outcome back; never returns."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # user code (and its children) must not read the runner's channel
    os.close(devnull)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - the process's stdin from now on
    os.setpgid(0, 0)  # the parent ends leftover background processes before it writes the frame
    with os.fdopen(payload_fd, "rb") as stream:
        line = stream.readline()
    if not line:
        os._exit(0)  # the parent got no payload: the container is being stopped
    payload = json.loads(line)
    os.environ.update(payload.pop("env", None) or {})  # the task's secrets, for its code only
    deps = os.environ.get("TASKMESH_DEPS")
    if deps and os.path.isdir(deps):
        sys.path.insert(0, deps)
    sys.path.insert(0, "/tmp")
    os.chdir("/tmp")
    frame = _finished(_request(payload) if payload.get("mode") == "api" else _call(payload), payload)
    data = json.dumps(frame, separators=(",", ":")).encode("utf-8")
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    _write_all(result_fd, LENGTH.pack(len(data)) + data)
    os._exit(0)


def _not_dumpable():
    """PR_SET_DUMPABLE 0: no process of our user may read our memory or open our fds via /proc."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")


def _receive(fd, pid, limit):
    """(data, status): the child's length-prefixed outcome or None, and its wait status if reaped.
    Data longer than ``limit`` is b"" (not read further). A background process of the child may
    hold the pipe open after the child died, so the child's exit is watched as well as EOF."""
    data, status = bytearray(), None
    while True:
        if len(data) >= LENGTH.size:
            (size,) = LENGTH.unpack_from(data)
            if size > limit:
                return b"", status
            if len(data) >= LENGTH.size + size:
                return bytes(data[LENGTH.size : LENGTH.size + size]), status
        if status is not None:
            return None, status
        readable, _, _ = select.select([fd], [], [], 0.1)
        if readable:
            chunk = os.read(fd, 1 << 20)
            if chunk:
                data += chunk
                continue
            status = os.waitpid(pid, 0)[1]  # EOF: no writer is left, the child has ended
            continue
        done, wait_status = os.waitpid(pid, os.WNOHANG)
        if done:
            os.set_blocking(fd, False)
            try:
                while len(data) <= limit + LENGTH.size:
                    chunk = os.read(fd, 1 << 20)
                    if not chunk:
                        break
                    data += chunk
            except BlockingIOError:
                pass
            status = wait_status


def _invalid(message):
    return {"ok": False, "error": {"type": "invalid_result", "message": message}}


def _checked(data, mode, result_cap):
    """The frame the parent writes: only what the child's outcome may say, within bounds."""
    if not data:
        return {
            "ok": False,
            "error": {
                "type": "result_too_large",
                "message": ("the outcome of the run is larger than the result limit of %d bytes" % result_cap),
            },
        }
    try:
        frame = json.loads(data)
    except (ValueError, RecursionError):
        return _invalid("the sandbox sent an unreadable outcome")
    if not isinstance(frame, dict) or not isinstance(frame.get("ok"), bool):
        return _invalid("the sandbox sent an outcome without ok")
    if frame["ok"]:
        try:
            size = len(json.dumps(frame.get("result"), allow_nan=False))
        except (ValueError, RecursionError):
            return _invalid("the sandbox sent a result that is not JSON")
        if size > result_cap:
            return {
                "ok": False,
                "error": {
                    "type": "result_too_large",
                    "message": ("the return value is %d bytes of JSON; the limit is %d" % (size, result_cap)),
                },
            }
        checked = {"ok": True, "result": frame.get("result")}
        if isinstance(frame.get("reason"), str):
            checked["reason"] = frame["reason"][:1024]
        return checked
    error: dict[str, Any] = frame["error"] if isinstance(frame.get("error"), dict) else {}
    if error.get("type") not in ERROR_TYPES.get(mode, ()):
        return _invalid("the sandbox sent an unknown error type")
    checked = {"type": error["type"], "message": _capped(error.get("message"), MESSAGE_CAP) or "failed"}
    if isinstance(error.get("exc_type"), str):
        checked["exc_type"] = error["exc_type"][:256]
    if isinstance(error.get("traceback"), str):
        checked["traceback"] = _capped(error["traceback"], TRACEBACK_CAP)
    return {"ok": False, "error": checked}


def _exit_like(status):
    """End the way the child ended, so the runner tells OOM, signals and exit codes apart."""
    if os.WIFSIGNALED(status):
        os._exit(128 + os.WTERMSIG(status))
    os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


def _parent(pid, payload_fd, result_fd):
    """Read the header and payload, feed the child, frame its outcome; never runs user code."""
    _not_dumpable()
    header = json.loads(sys.stdin.buffer.readline())
    line = sys.stdin.buffer.readline()
    nonce = header["nonce"]
    try:
        _write_all(payload_fd, line)
    except OSError:
        pass  # the child is gone: its exit is reported below
    os.close(payload_fd)
    data, status = _receive(result_fd, pid, header["frame_cap"])
    if data is None:
        _exit_like(status if status is not None else os.waitpid(pid, 0)[1])
    try:
        os.killpg(pid, signal.SIGKILL)  # background processes must not write into the frame
    except OSError:
        pass
    frame = _checked(data, header.get("mode", "code"), header["result_cap"])
    # stdout and stderr reach the runner through separate pipes: a marker closes each, so the
    # runner knows it has all output without waiting for the container to exit.
    try:
        os.write(2, (nonce + "\n").encode("utf-8"))
    except OSError:
        pass
    _write_all(1, (nonce + json.dumps(frame, separators=(",", ":")) + "\n").encode("utf-8"))
    os._exit(0)


def main():
    payload_read, payload_write = os.pipe()
    result_read, result_write = os.pipe()
    pid = os.fork()  # before anything is read: the child never holds the nonce
    if pid == 0:
        os.close(payload_write)
        os.close(result_read)
        _child(payload_read, result_write)
    os.close(payload_read)
    os.close(result_write)
    _parent(pid, payload_write, result_read)


main()
