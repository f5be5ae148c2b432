"""Services collect cyclic garbage rarely and never walk their start-up heap (services/common/collector.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from services.common.collector import THRESHOLDS

PROBE = textwrap.dedent(
    """
    import gc, json, sys
    from services.common.lifecycle import run_service
    from services.common.settings import ServiceSettings

    async def main(settings, stop):
        print(json.dumps({"thresholds": gc.get_threshold(), "frozen": gc.get_freeze_count()}), flush=True)

    run_service("probe", ServiceSettings, main)
    """
)


def test_a_service_runs_with_the_collector_tuned() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert tuple(seen["thresholds"]) == THRESHOLDS
    assert THRESHOLDS[0] > 700 and THRESHOLDS[2] > 10  # rarer than the interpreter's defaults
    # what start-up built (modules, classes, functions: tens of thousands of objects) is frozen
    assert seen["frozen"] > 10_000
