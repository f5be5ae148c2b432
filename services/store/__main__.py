"""``python -m services.store``"""

from services.common.lean import without_aiohttp

without_aiohttp()  # before nats is imported: see services/common/lean.py

from services.common.lifecycle import run_service  # noqa: E402
from services.store.service import main  # noqa: E402
from services.store.settings import StoreSettings  # noqa: E402

if __name__ == "__main__":
    run_service("store", StoreSettings, main)
