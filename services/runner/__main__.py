"""``python -m services.runner``"""

from services.common.lean import without_aiohttp

without_aiohttp()  # before nats is imported: see services/common/lean.py

from services.common.lifecycle import run_service  # noqa: E402
from services.runner.service import main  # noqa: E402
from services.runner.settings import RunnerSettings  # noqa: E402

if __name__ == "__main__":
    run_service("runner", RunnerSettings, main)
