"""Store settings (``TASKMESH_*``)."""

from __future__ import annotations

from datetime import timedelta

from proto.tasks import Limits
from services.common.settings import ServiceSettings


class StoreSettings(ServiceSettings, kw_only=True, forbid_unknown_fields=True):
    """Retention, caps, and the operator limits submissions are checked against."""

    task_retention: timedelta = timedelta(days=7)
    """Finished one-shot tasks (with their runs and logs) are deleted this long after finishing."""
    retention_sweep_interval: timedelta = timedelta(seconds=60)
    run_history_limit: int = 100
    """Runs kept per task (schedules fire forever); the oldest finished ones go first."""
    log_cap_bytes: int = 1024 * 1024
    max_concurrent_requests: int = 1024
    # Operator limits (also read by the runner, which enforces them again).
    code_timeout_seconds: float = 300.0
    api_timeout_seconds: float = 30.0
    max_timeout_seconds: float = 3600.0
    sandbox_memory_mb: int = 512
    max_memory_mb: int = 2048
    sandbox_cpus: float = 0.5
    max_cpus: float = 2.0
    allow_sandbox_network: bool = True

    def limits(self) -> Limits:
        """The operator limits as the contract names them."""
        return Limits(
            code_timeout_seconds=self.code_timeout_seconds, api_timeout_seconds=self.api_timeout_seconds,
            max_timeout_seconds=self.max_timeout_seconds, memory_mb=self.sandbox_memory_mb,
            max_memory_mb=self.max_memory_mb, cpus=self.sandbox_cpus, max_cpus=self.max_cpus,
            allow_network=self.allow_sandbox_network,
        )
