"""Gateway settings (``TASKMESH_*``)."""

from __future__ import annotations

from services.common.secret_keys import SecretKeys
from services.common.settings import ServiceSettings
from services.gateway.scopes import Tokens


class GatewaySettings(ServiceSettings, kw_only=True, forbid_unknown_fields=True):
    """Where to listen, who may call, how big a body may be."""

    http_host: str = "127.0.0.1"
    http_port: int = 5001
    api_tokens: list[str] = []
    """Bearer tokens, comma-separated; when any is set (here or in the file), every endpoint but
    /api/health needs one. `token:read+submit:api` gives a token scopes (`read`, `submit:api`,
    `submit:code`, `admin`); a plain `token` has every scope, as before scopes existed."""
    api_tokens_file: str | None = None
    """A file of more tokens, one `token scope scope...` per line (`#` comments); a token alone has every scope."""
    secrets_key: list[str] = []
    """Keys that seal and open secret values: base64 of 32 random bytes each, comma-separated; the first
    seals, every one opens (rotation: put the new key first). Gateway and runners need the same keys."""
    secrets_key_file: str | None = None
    """A file of more secrets keys, one per line (`#` comments), after those of `TASKMESH_SECRETS_KEY`."""
    max_body_bytes: int = 1024 * 1024
    store_timeout_seconds: float = 5.0
    submit_retry_seconds: float = 20.0
    """How long a submission whose store request timed out or found no store (or no NATS) is repeated
    under the same task id, so that it lands once, before the client gets a 503: a store restart, a
    standby store taking over (within the 10 s lease) or a NATS outage is ridden out. A client may
    wait this plus `TASKMESH_STORE_TIMEOUT_SECONDS`."""
    max_wait_seconds: float = 300.0
    max_waiters: int = 1000
    """Waits (`/wait`, submit with `?wait=`) open at once; past it a 429 `too_many_waiters`."""
    max_followers: int = 200
    """Log follows (`/logs?follow=true`) open at once; past it a 429 `too_many_waiters`."""

    def __post_init__(self) -> None:
        self.tokens()  # a malformed entry or an unknown scope stops the gateway at start
        self.secret_keys()  # so does a malformed secrets key

    def secret_keys(self) -> SecretKeys:
        """The keyring (SecretKeyError, a ValueError, if a key is malformed); empty when none is set."""
        return SecretKeys.configured(self.secrets_key, self.secrets_key_file)

    def tokens(self) -> Tokens:
        """The configured tokens with their scopes (TokenError, a ValueError, if malformed)."""
        return Tokens.configured(self.api_tokens, self.api_tokens_file)
