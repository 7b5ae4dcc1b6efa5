"""What a worker's activities may reach, read from the environment the operator renders."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

TEMPORAL_ADDRESS_ENV = "AIOS_TEMPORAL_ADDRESS"
TEMPORAL_NAMESPACE_ENV = "AIOS_TEMPORAL_NAMESPACE"
DEFAULT_TASK_QUEUE = "aios"


@dataclass(frozen=True)
class WorkerSettings:
    """What activities may need to reach; read from the environment the operator renders."""

    temporal_address: str
    namespace: str = "default"
    task_queue: str = DEFAULT_TASK_QUEUE
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, task_queue: str | None = None) -> WorkerSettings:
        address = os.environ.get(TEMPORAL_ADDRESS_ENV)
        if not address:
            raise RuntimeError(f"set {TEMPORAL_ADDRESS_ENV} to the Temporal frontend (host:port)")
        return cls(
            temporal_address=address,
            namespace=os.environ.get(TEMPORAL_NAMESPACE_ENV, "default"),
            task_queue=task_queue or DEFAULT_TASK_QUEUE,
            env=dict(os.environ),
        )
