"""``taskmesh secrets set/list/delete`` against a running stack."""

from __future__ import annotations

import asyncio
import sys

from tests.cli.conftest import ROOT, Taskmesh, cli_env
from tests.support import Api, TargetServer


async def test_secrets_set_from_an_option_or_stdin_list_without_values_and_delete(
    taskmesh: Taskmesh, api: Api, target: TargetServer
) -> None:
    by_option = await taskmesh("secrets", "set", "FROM_OPTION", "--value", "option-value-51c2")
    assert by_option.code == 0 and "FROM_OPTION" in by_option.stdout, by_option
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "taskmesh",
        "secrets",
        "set",
        "FROM_STDIN",
        cwd=ROOT,
        env=cli_env(taskmesh.url),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(b"stdin-value-51c2\n"), 60)
    assert process.returncode == 0, stderr

    listed = await taskmesh("secrets", "list", "--json")
    assert [s["name"] for s in listed.json()["secrets"]] == ["FROM_OPTION", "FROM_STDIN"]
    table = await taskmesh("secrets")
    assert "FROM_OPTION" in table.stdout and "FROM_STDIN" in table.stdout
    assert "value-51c2" not in listed.stdout + table.stdout

    created = await api.submit(
        {
            "name": "cli secret",
            "task_type": "immediate",
            "api_url": f"{target.url}/echo",
            "method": "POST",
            "data": "{{ secrets.FROM_STDIN }}",
        }
    )
    assert (await api.wait_final(created["id"]))["status"] == "succeeded"
    assert target.bodies[-1] == "stdin-value-51c2"  # the trailing newline of `echo` is not part of it

    bad = await taskmesh("secrets", "set", "bad-name", "--value", "v")
    assert bad.code == 3 and "name" in bad.stderr, bad
    deleted = await taskmesh("secrets", "delete", "FROM_OPTION")
    assert deleted.code == 0, deleted
    gone = await taskmesh("secrets", "delete", "FROM_OPTION")
    assert gone.code == 3 and "FROM_OPTION" in gone.stderr, gone
