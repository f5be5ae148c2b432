"""Sealing and opening secret values: AES-GCM bound to the name, and key rotation."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from services.common.secret_keys import SecretKeyError, SecretKeys, ensure_key_file, new_key
from services.common.settings import SettingsError, load_settings
from services.gateway.settings import GatewaySettings
from services.runner.settings import RunnerSettings
from taskmesh.processes import local_service_env


def test_a_sealed_value_opens_only_under_its_own_name_and_does_not_contain_the_value() -> None:
    keys = SecretKeys.configured([new_key()], None)
    sealed = keys.seal("A", "plain-value")
    assert b"plain-value" not in msgspec.json.encode(sealed)
    assert keys.open("A", sealed) == "plain-value"
    with pytest.raises(SecretKeyError):
        keys.open("B", sealed)  # a value moved to another name does not open


def test_after_rotation_the_new_key_seals_and_the_old_one_still_opens() -> None:
    old, new = new_key(), new_key()
    before = SecretKeys.configured([old], None).seal("A", "v1")
    rotated = SecretKeys.configured([new, old], None)
    after = rotated.seal("A", "v2")
    assert after.key_id != before.key_id
    assert rotated.open("A", before) == "v1" and rotated.open("A", after) == "v2"
    with pytest.raises(SecretKeyError, match="does not have"):
        SecretKeys.configured([new], None).open("A", before)  # the old key dropped too early


def test_keys_come_from_the_environment_and_a_file_and_a_malformed_one_is_refused(tmp_path: Path) -> None:
    path = ensure_key_file(tmp_path / "k" / "secrets.key")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert ensure_key_file(path).read_text() == path.read_text()  # kept, not replaced
    from_file = SecretKeys.configured([], str(path))
    assert from_file.usable and from_file.open("A", from_file.seal("A", "v")) == "v"
    assert not SecretKeys.configured([], None).usable
    with pytest.raises(SecretKeyError, match="32 bytes"):
        SecretKeys.configured([base64.b64encode(os.urandom(16)).decode()], None)
    with pytest.raises(SecretKeyError, match="base64"):
        SecretKeys.configured(["not base64!"], None)
    with pytest.raises(SecretKeyError):
        SecretKeys.configured([], None).seal("A", "v")


def test_local_mode_makes_a_key_file_on_first_start_and_keeps_it(tmp_path: Path) -> None:
    path = Path(local_service_env("nats://127.0.0.1:4222", 5001, tmp_path)["TASKMESH_SECRETS_KEY_FILE"])
    first = path.read_text()
    again = Path(local_service_env("nats://127.0.0.1:4222", 5001, tmp_path)["TASKMESH_SECRETS_KEY_FILE"])
    assert again == path and path.read_text() == first
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert SecretKeys.configured([], str(path)).usable


@pytest.mark.parametrize("settings", [GatewaySettings, RunnerSettings])
def test_a_malformed_key_stops_the_service_at_start_naming_the_variable_not_the_key(settings: type) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(settings, {"TASKMESH_SECRETS_KEY": "c2hvcnQta2V5"})
    assert "TASKMESH_SECRETS_KEY" in str(caught.value) and "c2hvcnQta2V5" not in str(caught.value)


def test_a_gateway_with_a_key_configured_does_not_load_cryptography_until_a_secret_is_sealed() -> None:
    # cryptography is ~6 MiB of RSS per process; a gateway that never sees a secret should not pay it.
    probe = (
        "import sys\n"
        "from services.common.settings import load_settings\n"
        "from services.gateway.app import main\n"
        "from services.gateway.settings import GatewaySettings\n"
        "settings = load_settings(GatewaySettings, {'TASKMESH_SECRETS_KEY': sys.argv[1]})\n"
        "print('cryptography' in sys.modules)\n"
        "settings.secret_keys().seal('A', 'v')\n"
        "print('cryptography' in sys.modules)\n"
    )
    shown = subprocess.run(
        [sys.executable, "-c", probe, new_key()], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert shown == ["False", "True"]
