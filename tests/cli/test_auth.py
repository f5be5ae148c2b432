"""The token from --token or TASKMESH_TOKEN reaches a gateway that requires one."""

from __future__ import annotations

import pytest

from tests.cli.conftest import Taskmesh

TOKEN = "cli-test-token"


@pytest.fixture
def stack_env() -> dict[str, str]:
    return {"TASKMESH_API_TOKENS": TOKEN}


async def test_without_a_token_the_error_says_how_to_give_one(taskmesh: Taskmesh) -> None:
    result = await taskmesh("list")
    assert result.code == 3, result
    assert result.stderr == (
        "error: a valid 'Authorization: Bearer <token>' header is required (unauthorized); "
        "pass --token or set TASKMESH_TOKEN\n"
    )


async def test_the_token_flag_is_sent_as_a_bearer_header(taskmesh: Taskmesh) -> None:
    result = await taskmesh("--token", TOKEN, "list", "--json")
    assert result.code == 0, result
    assert result.json()["tasks"] == []


async def test_the_token_environment_variable_is_sent_as_a_bearer_header(taskmesh: Taskmesh) -> None:
    result = await taskmesh("stats", "--json", TASKMESH_TOKEN=TOKEN)
    assert result.code == 0, result
    assert result.json()["tasks_total"] == 0
