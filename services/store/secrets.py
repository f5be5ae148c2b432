"""The secrets bucket: the store keeps sealed values (it never holds a key) and checks references."""

from __future__ import annotations

import logging
from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from proto import codec, subjects
from proto.errors import ErrorCode, FieldError
from proto.secrets import PutSecretRequest, SecretDeleted, SecretEntry, SecretInfo, SecretList, SecretRef
from proto.tasks import TaskSpec, secret_references
from services.common import natsio
from services.common.clock import utcnow
from services.store.errors import StoreError

log = logging.getLogger(__name__)


class SecretNotFound(StoreError):
    """No secret of that name."""

    code: ErrorCode = "not_found"


class Secrets:
    """Put, list, delete; and whether the secrets a task names exist."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, fence: Callable[[], None] = lambda: None) -> None:
        self.js = js
        self.kv = kv
        self.fence = fence
        """Raises unless this store may write (it leads)."""

    async def _entry(self, name: str) -> SecretEntry | None:
        try:
            entry = await self.kv.get(name)
        except KeyNotFoundError:
            return None
        return codec.decode(SecretEntry, entry.value) if entry.value else None

    async def put(self, request: PutSecretRequest) -> SecretInfo:
        """Keep the sealed value; a replaced secret keeps its creation time."""
        now = utcnow()
        previous = await self._entry(request.name)
        entry = SecretEntry(
            name=request.name,
            sealed=request.sealed,
            created_at=previous.created_at if previous else now,
            updated_at=now,
        )
        self.fence()
        await self.kv.put(request.name, codec.encode(entry))
        log.info("secret set", extra={"secret": request.name, "key_id": request.sealed.key_id})
        return SecretInfo(name=entry.name, created_at=entry.created_at, updated_at=entry.updated_at)

    async def list(self) -> SecretList:
        """Names and times of every secret, by name."""
        infos = []
        async for _, data in natsio.read_bucket(self.js, subjects.BUCKET_SECRETS):
            entry = codec.decode(SecretEntry, data)
            infos.append(SecretInfo(name=entry.name, created_at=entry.created_at, updated_at=entry.updated_at))
        return SecretList(secrets=sorted(infos, key=lambda info: info.name))

    async def delete(self, request: SecretRef) -> SecretDeleted:
        """Remove a secret (its value is not kept: the bucket keeps one revision)."""
        if await self._entry(request.name) is None:
            raise SecretNotFound(f"no secret named {request.name!r}", "name")
        self.fence()
        await self.kv.purge(request.name)
        log.info("secret deleted", extra={"secret": request.name})
        return SecretDeleted(name=request.name, deleted=True)

    async def check_references(self, spec: TaskSpec) -> None:
        """FieldError naming the field that names a secret that does not exist."""
        for name, field in secret_references(spec).items():
            if await self._entry(name) is None:
                raise FieldError(
                    field, f"{field} uses the secret {name!r}, which does not exist (PUT /api/secrets/{name})"
                )
