"""Every Python example of docs/python.md runs as a script against a real stack and prints what the page shows."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import wheelhouse
from tests.support import Stack, TargetServer, WheelServer

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "python.md"
EXAMPLE = re.compile(r"```python\n(?P<code>.*?)```(?:\s*```text\n(?P<output>.*?)```)?", re.S)


def examples() -> list[tuple[str, str | None]]:
    """Each python block of the page, with the text block right under it (its output) if there is one."""
    return [(m["code"], m["output"]) for m in EXAMPLE.finditer(PAGE.read_text(encoding="utf-8"))]


@pytest.fixture(scope="module")
def posts_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WheelServer]:
    """A local stand-in for jsonplaceholder.typicode.com: 100 posts, as the real one has."""
    directory = tmp_path_factory.mktemp("posts")
    posts = [{"userId": 1 + i // 10, "id": i + 1, "title": f"post number {i + 1}", "body": "…"} for i in range(100)]
    (directory / "posts").write_text(json.dumps(posts))
    server = WheelServer(directory).start()  # a static directory server; nothing wheel-specific about it
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def local_numpy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """numpy for the first example's plain local call, unpacked from the test wheelhouse (never from an index)."""
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    found = sorted(wheelhouse.target_dir().glob(f"numpy-2.2.6-{tag}-{tag}-*.whl"))
    if not found:
        pytest.fail(
            f"no numpy wheel for {tag} in {wheelhouse.target_dir()}: the wheelhouse is made for the "
            "sandbox's Python; run the tests with the same Python version",
            pytrace=False,
        )
    directory = tmp_path_factory.mktemp("local-numpy")
    with zipfile.ZipFile(found[0]) as wheel:
        wheel.extractall(directory)
    return directory


def test_the_page_has_examples_each_with_its_output() -> None:
    found = examples()
    assert len(found) >= 10
    assert all("import taskmesh" in code for code, _ in found)


@pytest.mark.parametrize("number", range(len(examples())), ids=lambda n: f"example-{n + 1}")
async def test_the_example_prints_what_the_page_shows(
    number: int,
    sandbox_stack: Stack,
    target: TargetServer,
    posts_server: WheelServer,
    local_numpy: Path,
    tmp_path: Path,
) -> None:
    code, output = examples()[number]
    code = code.replace("https://example.org/hook", f"{target.url}/echo").replace(
        "https://jsonplaceholder.typicode.com/posts", f"{posts_server.url}posts"
    )
    script = tmp_path / f"example_{number + 1}.py"
    script.write_text(code, encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("TASKMESH_URL", "TASKMESH_TOKEN")},
        "TASKMESH_URL": sandbox_stack.base_url,
        "PYTHONPATH": os.pathsep.join((str(ROOT), str(local_numpy))),
        "PYTHONIOENCODING": "utf-8",
    }
    # a subprocess, as a user runs it; asynchronously, because the target server lives on this event loop
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), 400)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"example {number + 1} still running after 400 s:\n{code}") from None
    assert process.returncode == 0, f"example {number + 1} failed:\n{code}\n--- stderr\n{stderr.decode()}"
    if output is not None:
        assert stdout.decode() == output, f"example {number + 1} printed something else:\n{code}"
