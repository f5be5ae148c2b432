"""Removing a container: the engine's transient refusals are retried, real errors are not."""

from __future__ import annotations

from typing import Any

import docker.errors
import pytest
import requests

from services.runner.sandbox.engine import Engine


class ScriptedEngine(Engine):
    """An Engine whose calls answer from a script of outcomes (pure retry logic, no engine)."""

    remove_retry_delays = (0.0, 0.0, None)

    def __init__(self, outcomes: list[int | None]) -> None:
        super().__init__(None, threads=1)
        self.outcomes = outcomes
        self.calls = 0

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        assert method == "remove_container"
        status = self.outcomes[self.calls]
        self.calls += 1
        if status is None:
            return None
        response = requests.Response()
        response.status_code = status
        error = docker.errors.NotFound if status == 404 else docker.errors.APIError
        raise error("scripted", response=response)


async def test_a_container_caught_exiting_is_removed_on_a_later_attempt() -> None:
    engine = ScriptedEngine([500, 500, None])
    await engine.remove("c1")
    assert engine.calls == 3


async def test_server_errors_are_given_up_on_after_the_last_attempt() -> None:
    engine = ScriptedEngine([500, 500, 500])
    with pytest.raises(docker.errors.APIError):
        await engine.remove("c1")
    assert engine.calls == 3


@pytest.mark.parametrize("status", [404, 409])
async def test_gone_or_already_being_removed_counts_as_removed(status: int) -> None:
    engine = ScriptedEngine([status])
    await engine.remove("c1")
    assert engine.calls == 1


async def test_a_client_error_is_not_retried() -> None:
    engine = ScriptedEngine([400, None])
    with pytest.raises(docker.errors.APIError):
        await engine.remove("c1")
    assert engine.calls == 1
