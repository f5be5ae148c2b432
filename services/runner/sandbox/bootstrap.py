"""Runs inside a sandbox container (``python3 -I -u -c <this file>``); standard library only.

It waits for ONE line of JSON on stdin (so a container can be started ahead of time), runs the
user's function (or makes the HTTP request of an isolated API task), and writes one result frame
on stdout: ``<nonce><json>\\n``. Arguments and results cross as JSON data; nothing the user sent
is ever spliced into source code or a command line. User output goes to stdout/stderr as usual.
"""

import asyncio
import builtins
import inspect
import json
import linecache
import os
import sys
import time
import traceback

TASK_FILE = "task.py"


def _emit(nonce, frame):
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:
        pass
    # stdout and stderr reach the runner through separate pipes: a marker closes each, so the
    # runner knows it has all output without waiting for the container to exit.
    try:
        os.write(2, (nonce + "\n").encode("utf-8"))
    except OSError:
        pass
    os.write(1, (nonce + json.dumps(frame, separators=(",", ":")) + "\n").encode("utf-8"))
    os._exit(0)


def _user_traceback(exc):
    frames = traceback.extract_tb(exc.__traceback__)
    while frames and frames[0].filename != TASK_FILE:
        frames.pop(0)  # the harness's frames come first: they are not the user's business
    lines = ["Traceback (most recent call last):\n"] if frames else []
    lines += traceback.format_list(frames)
    lines += traceback.format_exception_only(type(exc), exc)
    return "".join(lines)


def _exception(exc, error_type="exception"):
    return {"ok": False, "error": {
        "type": error_type,
        "exc_type": type(exc).__name__,
        "message": "%s: %s" % (type(exc).__name__, exc) if str(exc) else type(exc).__name__,
        "traceback": _user_traceback(exc),
    }}


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
        return {"ok": False, "error": {"type": "function_not_found", "message": (
            "function_code defines no callable %r" % payload["function"])}}
    try:
        value = function(*payload.get("args", []), **payload.get("kwargs", {}))
        if inspect.isawaitable(value):
            async def wait_for(awaitable):
                return await awaitable
            value = asyncio.run(wait_for(value))
    except BaseException as exc:
        return _exception(exc)
    return {"ok": True, "result": value}


def _request(payload):
    request = payload["request"]
    body = request.get("body")
    data = body.encode("utf-8") if isinstance(body, str) else None
    started = time.perf_counter()
    try:
        import requests  # the seed's default requirement for isolated API tasks
    except ImportError:
        requests = None
    try:
        if requests is not None:
            response = requests.request(request["method"], request["url"], headers=request["headers"], data=data,
                                        timeout=request["timeout"], allow_redirects=False)
            status, reason, headers, content = (response.status_code, response.reason,
                                                dict(response.headers), response.content)
        else:
            import urllib.error
            import urllib.request
            req = urllib.request.Request(request["url"], data=data, method=request["method"],
                                         headers=request["headers"])
            try:
                with urllib.request.urlopen(req, timeout=request["timeout"]) as response:
                    status, reason, headers, content = (response.status, response.reason,
                                                        dict(response.headers), response.read())
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
    sys.stderr.write("%s %s -> %s %s in %.1f ms\n" % (request["method"], request["log_url"], status, reason,
                                                      elapsed_ms))
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
    if kind == "numpy":
        if hasattr(value, "tolist"):
            return _jsonable(value.tolist(), depth + 1)
    if kind == "pandas" and hasattr(value, "to_dict"):
        return _jsonable(value.to_dict(), depth + 1)
    if type(value).__name__ == "Decimal":
        return _jsonable(float(value), depth + 1)
    raise TypeError("a value of type %s.%s cannot be returned as JSON"
                    % (type(value).__module__, type(value).__qualname__))


def _key(key):
    if isinstance(key, str):
        return key
    if isinstance(key, (bool, int, float)) or key is None:
        return json.dumps(key)
    if hasattr(key, "isoformat") and callable(key.isoformat):
        return key.isoformat()
    converted = _jsonable(key)
    return converted if isinstance(converted, str) else json.dumps(converted)


def main():
    line = sys.stdin.buffer.readline()
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # user code (and its children) must not wait on our channel
    sys.stdin = open(os.devnull)
    payload = json.loads(line)
    nonce = payload["nonce"]
    deps = os.environ.get("TASKMESH_DEPS")
    if deps and os.path.isdir(deps):
        sys.path.insert(0, deps)
    sys.path.insert(0, "/tmp")
    os.chdir("/tmp")
    frame = _request(payload) if payload.get("mode") == "api" else _call(payload)
    if frame.get("ok"):
        try:
            frame["result"] = _jsonable(frame["result"])
            encoded = json.dumps(frame["result"], allow_nan=False)
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            frame = {"ok": False, "error": {"type": "invalid_result", "message": (
                "the return value is not JSON-serialisable: %s: %s" % (type(exc).__name__, exc))}}
        else:
            cap = payload.get("result_cap", 524288)
            if len(encoded) > cap:
                frame = {"ok": False, "error": {"type": "result_too_large", "message": (
                    "the return value is %d bytes of JSON; the limit is %d" % (len(encoded), cap))}}
    _emit(nonce, frame)


main()
