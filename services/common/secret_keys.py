"""The keys that seal and open secret values (AES-256-GCM, from ``cryptography``).

Keys come from ``TASKMESH_SECRETS_KEY`` (comma-separated) and ``TASKMESH_SECRETS_KEY_FILE`` (one
per line, ``#`` comments), each the base64 of 32 random bytes. The first key seals; every key
opens. A key's id is derived from the key itself, so rotating needs no naming: put the new key
first, keep the old one after it until every secret has been set again, then drop it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from proto.secrets import SealedValue

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
NONCE_BYTES = 12


class SecretKeyError(ValueError):
    """A configured key is malformed, or no key can open a value."""


def new_key() -> str:
    """A fresh random key, base64 encoded (what ``TASKMESH_SECRETS_KEY`` takes)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def key_id(key: bytes) -> str:
    """A short public name of a key: not the key, and the same wherever the key is."""
    return hashlib.sha256(b"taskmesh-secrets-key-id:" + key).hexdigest()[:16]


def _decoded(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SecretKeyError(f"{where}: a key must be base64 (e.g. `openssl rand -base64 32`)") from None
    if len(key) != KEY_BYTES:
        raise SecretKeyError(f"{where}: a key must be {KEY_BYTES} bytes, this one is {len(key)}")
    return key


class SecretKeys:
    """The keyring: seal with the first key, open with whichever key sealed."""

    def __init__(self, keys: list[bytes]) -> None:
        self._sealing_id = key_id(keys[0]) if keys else None
        self._keys_by_id = {key_id(key): key for key in keys}
        self._ciphers: dict[str, AESGCM] = {}

    def _cipher(self, kid: str) -> AESGCM:
        """The cipher of a key in the ring (built on first use)."""
        # ``cryptography`` is imported on the first seal or open, not at start: it is ~6 MiB of
        # RSS, and a gateway that never handles a secret should not carry it.
        cipher = self._ciphers.get(kid)
        if cipher is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            cipher = self._ciphers[kid] = AESGCM(self._keys_by_id[kid])
        return cipher

    @classmethod
    def configured(cls, inline: list[str], path: str | None) -> SecretKeys:
        """Keys from the settings (SecretKeyError, a ValueError, for a malformed one)."""
        keys = [_decoded(text, "TASKMESH_SECRETS_KEY") for text in inline]
        if path:
            try:
                lines = Path(path).read_text().splitlines()
            except OSError as exc:
                raise SecretKeyError(f"TASKMESH_SECRETS_KEY_FILE {path}: {exc.strerror}") from None
            for line in lines:
                if line.strip() and not line.lstrip().startswith("#"):
                    keys.append(_decoded(line, f"TASKMESH_SECRETS_KEY_FILE {path}"))
        return cls(keys)

    @property
    def usable(self) -> bool:
        """Whether there is a key to seal with."""
        return self._sealing_id is not None

    def seal(self, name: str, value: str) -> SealedValue:
        """Encrypt ``value`` for the secret ``name`` (the name is bound in: no swapping values)."""
        if self._sealing_id is None:
            raise SecretKeyError("no secrets key is configured (TASKMESH_SECRETS_KEY or TASKMESH_SECRETS_KEY_FILE)")
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._cipher(self._sealing_id).encrypt(nonce, value.encode(), name.encode())
        return SealedValue(key_id=self._sealing_id, nonce=nonce, ciphertext=ciphertext)

    def open(self, name: str, sealed: SealedValue) -> str:
        """The value, or SecretKeyError when no key here sealed it (or it was tampered with)."""
        if sealed.key_id not in self._keys_by_id:
            raise SecretKeyError(
                f"secret {name!r} is sealed with key {sealed.key_id}, which this service does not have"
            )
        from cryptography.exceptions import InvalidTag

        try:
            return self._cipher(sealed.key_id).decrypt(sealed.nonce, sealed.ciphertext, name.encode()).decode()
        except (InvalidTag, UnicodeDecodeError):
            raise SecretKeyError(f"secret {name!r} does not open with key {sealed.key_id}") from None


def ensure_key_file(path: Path) -> Path:
    """Create a key file with one fresh key (mode 0600) unless it exists; return its path."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write("# Taskmesh secrets key (the first line seals, every line opens)\n" + new_key() + "\n")
    return path


def main() -> None:
    """``python -m services.common.secret_keys PATH``: create a key file there unless one exists."""
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m services.common.secret_keys PATH")
    print(ensure_key_file(Path(sys.argv[1])))


if __name__ == "__main__":
    main()
