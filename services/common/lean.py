"""Keep services that do not serve HTTP from loading aiohttp.

nats-py imports aiohttp, when it is installed, only to offer a WebSocket transport we never use;
that costs every service ~10 MB of memory. Only the gateway needs aiohttp. Call this before
anything imports nats.
"""

import sys


def without_aiohttp() -> None:
    """Make ``import aiohttp`` fail in this process (nats-py then skips its WebSocket transport)."""
    sys.modules.setdefault("aiohttp", None)  # type: ignore[arg-type]
