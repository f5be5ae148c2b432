"""The public API is typed: mypy --strict accepts a program using it, and catches a wrong call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = Path(__file__).with_name("typed_example.py")


def mypy(path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    """mypy --strict on one file; errors in the modules it imports are not its business here."""
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent", "--cache-dir", str(cache), str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_program_on_the_public_api_passes_mypy_strict(tmp_path: Path) -> None:
    checked = mypy(EXAMPLE, tmp_path / "cache")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_mypy_catches_a_wrong_argument_and_a_wrong_result_type(tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.py"
    wrong.write_text(
        EXAMPLE.read_text() + "\n\ndef wrong() -> None:\n    mean('not a list')\n"
        "    text: str = mean.submit([1.0]).result()\n"
        "    tm.function(priority='high')(mean)\n"
        "    call_partner.schedule(1, cron='@daily', jitter_seconds='5m')\n"
    )
    checked = mypy(wrong, tmp_path / "cache")
    assert checked.returncode == 1
    assert 'Argument 1 to "__call__" of "Function" has incompatible type "str"' in checked.stdout, checked.stdout
    assert 'Incompatible types in assignment (expression has type "float", variable has type "str")' in checked.stdout
    assert 'No overload variant of "function" of "Client" matches argument type "str"' in checked.stdout
    assert 'Argument "jitter_seconds" to "schedule" of "Function" has incompatible type "str"' in checked.stdout
