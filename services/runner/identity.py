"""A runner's id is the public half of a key pair it makes at start, so it can prove who it is.

All runners connect as one NATS user, so the server cannot keep one runner from receiving, and
answering, another's ping. What it cannot fake is a signature: a runner signs its answers with its
private key, and whoever asks checks the signature against the id it addressed. No registry binds
ids to keys (one would need its own protection); the id is the key. See docs/architecture.md.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

RUNNER_ID_CHARS = 52
"""Base32 of the 32-byte public key, lower case and unpadded: a valid NATS subject token."""


@dataclass(frozen=True)
class RunnerIdentity:
    """This runner's key pair; ``runner_id`` is what it is known by everywhere."""

    runner_id: str
    _key: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> RunnerIdentity:
        """A new identity; it lives as long as the process (a restarted runner is a new runner)."""
        key = Ed25519PrivateKey.generate()
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(runner_id=base64.b32encode(raw).decode().rstrip("=").lower(), _key=key)

    def sign(self, statement: bytes) -> bytes:
        return self._key.sign(statement)


def _public_key(runner_id: str) -> Ed25519PublicKey | None:
    if len(runner_id) != RUNNER_ID_CHARS:  # 52 base32 characters are exactly 32 bytes
        return None
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b32decode(runner_id.upper() + "===="))
    except ValueError:  # not base32 (binascii.Error is a ValueError)
        return None


def signed_by(runner_id: str, statement: bytes, signature: bytes) -> bool:
    """Whether ``signature`` over ``statement`` was made by the runner whose id is ``runner_id``.

    False for an id that is not a key (an older runner's, a forged label): nothing it says can be
    checked."""
    key = _public_key(runner_id)
    if key is None:
        return False
    try:
        key.verify(signature, statement)
    except InvalidSignature:
        return False
    return True
