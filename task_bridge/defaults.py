"""Every default of `bridge.yaml` that is a number or a name, in one place (README tables and
`bridge.example.yaml` state the same values). Imported by the config models and by the code
that takes the same default when used on its own (the retry policy, the render budget)."""

from __future__ import annotations

from typing import Final

# source.postgres
SLOT: Final = "task_bridge"
PUBLICATION: Final = "task_bridge"
STATUS_INTERVAL_S: Final = 10.0
LAG_WARN_BYTES: Final = 1 << 30
# source.kafka
GROUP_ID: Final = "task-bridge"
# outbox
OUTBOX_URL: Final = "sqlite:///outbox.db"
RETENTION_S: Final = 7 * 86400.0
# delivery
CONCURRENCY: Final = 32
TIMEOUT_S: Final = 10.0
SHUTDOWN_GRACE_S: Final = 15.0
# delivery.retry
MAX_ATTEMPTS: Final = 12
INITIAL_BACKOFF_S: Final = 0.5
MAX_BACKOFF_S: Final = 300.0
MAX_AGE_S: Final = 86400.0
# limits
RENDER_STEPS: Final = 100_000
RENDER_TIME_S: Final = 1.0
PAYLOAD_BYTES: Final = 1_048_576
