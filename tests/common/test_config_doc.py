"""docs/configuration.md is generated from the Settings Structs and stays so."""

from __future__ import annotations

from pathlib import Path

import msgspec

from services.common import config_doc

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_configuration_table_is_what_the_generator_prints() -> None:
    assert DOC.read_text() == config_doc.render(), (
        "docs/configuration.md is stale: run `python -m services.common.config_doc > docs/configuration.md`"
    )


def test_every_setting_of_every_service_has_a_row_with_a_meaning() -> None:
    rows = {variable.strip("`"): meaning for variable, _, meaning, _ in config_doc.rows()}
    for kind in config_doc.SETTINGS.values():
        for field in msgspec.structs.fields(kind):
            assert rows[f"TASKMESH_{field.name.upper()}"].strip()


def test_settings_read_by_several_services_name_them_all() -> None:
    services = {variable.strip("`"): readers for variable, _, _, readers in config_doc.rows()}
    assert services["TASKMESH_NATS_URL"] == "all"
    assert services["TASKMESH_CODE_TIMEOUT_SECONDS"] == "store, runner"
    assert services["TASKMESH_HTTP_PORT"] == "gateway"
