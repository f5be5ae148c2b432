"""``python -m services.admin.replicas [N]``: bring every stream and bucket to N replicas.

Moving an install from one node (R1) to a cluster (R3): the services update the streams they own
themselves, but no service user may update a bucket's ``KV_`` stream, so this command does it
for all of them with the admin user. It also brings a bucket's TTL to proto's (the lease bucket's
went from 4 s to 10 s). N defaults to ``TASKMESH_JS_REPLICAS``. Credentials: ``TASKMESH_NATS_USER``
and ``TASKMESH_NATS_PASSWORD``, else user ``admin`` with ``TASKMESH_NATS_ADMIN_PASSWORD`` (set in
the nats containers, so ``docker compose exec nats-1 python -m services.admin.replicas 3`` works).
Safe to run twice; streams not created yet are left to their owner.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Mapping

import msgspec
import nats
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError

from proto import streams
from services.common.settings import ServiceSettings, load_settings

TIMEOUT_SECONDS = 10.0


def targets(replicas: int) -> dict[str, tuple[int, float | None]]:
    """Every stream name (buckets as ``KV_<bucket>``) → (replicas, max_age in seconds or None)."""
    wanted: dict[str, tuple[int, float | None]] = {name: (replicas, None) for name in streams.streams(replicas)}
    for name, bucket in streams.buckets(replicas).items():
        wanted[f"KV_{name}"] = (replicas, bucket.config.ttl or None)
    return wanted


async def upgrade(js: JetStreamContext, replicas: int, say: Callable[[str], None] = print) -> list[str]:
    """Update each existing stream whose replicas (or bucket TTL) differ; the names changed."""
    changed = []
    for name, (want_replicas, want_max_age) in targets(replicas).items():
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            say(f"{name}: not created yet (its owner creates it with the replicas it is configured with)")
            continue
        config: js_api.StreamConfig = info.config
        before = (config.num_replicas, config.max_age)
        config.num_replicas = want_replicas
        if want_max_age is not None:
            config.max_age = want_max_age
        if (config.num_replicas, config.max_age) == before:
            say(f"{name}: R{want_replicas} already")
            continue
        await js.update_stream(config)
        changed.append(name)
        ttl = f", max age {before[1]} s -> {want_max_age} s" if want_max_age and before[1] != want_max_age else ""
        say(f"{name}: R{before[0]} -> R{want_replicas}{ttl}")
    return changed


def admin_settings(environ: Mapping[str, str]) -> ServiceSettings:
    """The connection settings, with the admin user when none is given."""
    settings = load_settings(ServiceSettings, environ)
    if settings.nats_user is None and environ.get("TASKMESH_NATS_ADMIN_PASSWORD"):
        settings = msgspec.structs.replace(
            settings, nats_user="admin", nats_password=environ["TASKMESH_NATS_ADMIN_PASSWORD"]
        )
    return settings


async def main(settings: ServiceSettings, replicas: int) -> int:
    nc = await nats.connect(
        [u.strip() for u in settings.nats_url.split(",")],
        user=settings.nats_user,
        password=settings.nats_password,
        token=settings.nats_token,
        connect_timeout=3,
        max_reconnect_attempts=3,
        allow_reconnect=True,
    )
    try:
        changed = await upgrade(nc.jetstream(timeout=TIMEOUT_SECONDS), replicas)
    finally:
        await nc.close()
    print(f"{len(changed)} streams changed; the services keep running (restart them to drop the warning)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and not sys.argv[1].isdigit()):
        raise SystemExit("usage: python -m services.admin.replicas [REPLICAS]  (default: TASKMESH_JS_REPLICAS)")
    chosen = admin_settings(os.environ)
    count = int(sys.argv[1]) if len(sys.argv) == 2 else chosen.js_replicas
    if count not in (1, 3, 5):
        raise SystemExit(f"replicas must be 1, 3 or 5, not {count}")
    try:
        raise SystemExit(asyncio.run(main(chosen, count)))
    except (nats.errors.Error, OSError) as exc:
        raise SystemExit(f"replicas: {type(exc).__name__}: {exc}") from None
