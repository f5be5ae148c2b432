"""``python -m services.scheduler``"""

from services.common.lifecycle import run_service
from services.scheduler.service import main
from services.scheduler.settings import SchedulerSettings

if __name__ == "__main__":
    run_service("scheduler", SchedulerSettings, main)
