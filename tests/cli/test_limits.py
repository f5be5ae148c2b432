"""``taskmesh limits`` (list, set) against a running stack."""

from __future__ import annotations

from tests.cli.conftest import Taskmesh


async def test_limits_set_shows_the_operators_limit_and_list_shows_every_key(taskmesh: Taskmesh) -> None:
    empty = await taskmesh("limits")
    assert empty.code == 0 and "no task has set" in empty.stderr + empty.stdout, empty
    set_ = await taskmesh("limits", "set", "tenant:acme", "--max-concurrency", "3", "--rate", "10/s", "--json")
    assert set_.code == 0, set_
    assert set_.json()["source"] == "operator" and set_.json()["max_concurrency"] == 3
    listed = (await taskmesh("limits", "list", "--json")).json()
    assert [(k["key"], k["rate_limit"], k["running"], k["waiting"]) for k in listed["limits"]] == [
        ("tenant:acme", "10/s", 0, 0)
    ]
    table = await taskmesh("limits")
    assert "tenant:acme" in table.stdout and "10/s" in table.stdout, table
    bad = await taskmesh("limits", "set", "tenant:acme", "--rate", "fast")
    assert bad.code != 0 and "rate_limit" in bad.stderr, bad
    cleared = await taskmesh("limits", "set", "tenant:acme", "--json")
    assert cleared.json()["source"] == "none", cleared
