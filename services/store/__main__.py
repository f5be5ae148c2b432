"""``python -m services.store``"""

from services.common.lifecycle import run_service
from services.store.service import main
from services.store.settings import StoreSettings

if __name__ == "__main__":
    run_service("store", StoreSettings, main)
