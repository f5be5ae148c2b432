"""Keep services that make no HTTP requests and serve none from loading aiohttp.

nats-py imports aiohttp, when it is installed, only to offer a WebSocket transport we never use;
that costs ~10 MB of memory. The gateway (server) and the runner (client) use aiohttp; the store
and the scheduler call this before anything imports nats.
"""

import sys


def without_aiohttp() -> None:
    """Make ``import aiohttp`` fail in this process (nats-py then skips its WebSocket transport)."""
    sys.modules.setdefault("aiohttp", None)  # type: ignore[arg-type]  # None in sys.modules makes the import fail: the point
