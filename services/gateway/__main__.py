"""``python -m services.gateway``"""

from services.common.lifecycle import run_service
from services.gateway.app import main
from services.gateway.settings import GatewaySettings

if __name__ == "__main__":
    run_service("gateway", GatewaySettings, main)
