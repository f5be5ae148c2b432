"""``python -m services.runner``"""

from services.common.lifecycle import run_service
from services.runner.service import main
from services.runner.settings import RunnerSettings

if __name__ == "__main__":
    run_service("runner", RunnerSettings, main)
