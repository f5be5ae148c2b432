"""``python -m services.scheduler``"""

from services.common.lean import without_aiohttp

without_aiohttp()  # before nats is imported: see services/common/lean.py

from services.common.lifecycle import run_service  # noqa: E402
from services.scheduler.service import main  # noqa: E402
from services.scheduler.settings import SchedulerSettings  # noqa: E402

if __name__ == "__main__":
    run_service("scheduler", SchedulerSettings, main)
