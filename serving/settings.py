"""The scoring runtime's settings: environment variable names and defaults.

Deployment components import these names to configure containers, so this module imports nothing
outside the standard library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Names Azure ML itself sets; existing scripts read them.
ENTRY_SCRIPT = "AZUREML_ENTRY_SCRIPT"
MODEL_DIR = "AZUREML_MODEL_DIR"
# The runtime's own settings.
PORT = "PORT"
WORKER_COUNT = "WORKER_COUNT"
SCORING_TIMEOUT_MS = "SCORING_TIMEOUT_MS"
MAX_REQUEST_BYTES = "MAX_REQUEST_BYTES"
AUTH_KEYS = "SCORING_AUTH_KEYS"
"""Comma-separated accepted keys (primary, secondary); no keys means no auth check."""
APP_INSIGHTS = "APPLICATIONINSIGHTS_CONNECTION_STRING"
MAX_CONCURRENT_REQUESTS = "MAX_CONCURRENT_REQUESTS"
# Model data collection (off unless an account URL or a connection string is set).
COLLECT_ACCOUNT_URL = "MODEL_DATA_COLLECTION_ACCOUNT_URL"
COLLECT_CONNECTION_STRING = "MODEL_DATA_COLLECTION_CONNECTION_STRING"
COLLECT_CONTAINER = "MODEL_DATA_COLLECTION_CONTAINER"
COLLECT_PREFIX = "MODEL_DATA_COLLECTION_PREFIX"
COLLECT_FLUSH_SECONDS = "MODEL_DATA_COLLECTION_FLUSH_SECONDS"

DEFAULT_PORT = 5001
DEFAULT_TIMEOUT_MS = 60_000
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024

LIVENESS_PATH = "/"
READINESS_PATH = "/ready"
SCORE_PATH = "/score"
SWAGGER_PATH = "/swagger.json"


@dataclass(frozen=True)
class Settings:
    """Resolved runtime settings."""

    entry_script: str = ""
    """Empty in an image's service settings: the image's own environment names its script."""
    model_dir: str | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    workers: int = 1
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    auth_keys: tuple[str, ...] = ()
    max_concurrent_requests: int = 0
    """Requests one worker runs at once before answering 503; 0 means no limit."""

    def environ(self) -> dict[str, str]:
        """These settings as the environment variables the runtime reads."""
        env = {
            PORT: str(self.port),
            WORKER_COUNT: str(self.workers),
            SCORING_TIMEOUT_MS: str(self.timeout_ms),
            MAX_REQUEST_BYTES: str(self.max_request_bytes),
            MAX_CONCURRENT_REQUESTS: str(self.max_concurrent_requests),
        }
        if self.entry_script:
            env[ENTRY_SCRIPT] = self.entry_script
        if self.model_dir is not None:
            env[MODEL_DIR] = self.model_dir
        if self.auth_keys:
            env[AUTH_KEYS] = ",".join(self.auth_keys)
        return env


def workers_for_cores(cpu_cores: float) -> int:
    """Worker processes for a container with `cpu_cores` cores: one per whole core, at least one."""
    return max(1, int(cpu_cores))


def _int(env: dict[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"serving: {name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise SystemExit(f"serving: {name}={raw!r} must be at least {minimum}")
    return value


def from_environ(env: dict[str, str] | None = None) -> Settings:
    """Settings from environment variables (as images and orchestrators set them)."""
    env = dict(os.environ if env is None else env)
    script = env.get(ENTRY_SCRIPT)
    if not script:
        raise SystemExit(f"serving: no entry script: set {ENTRY_SCRIPT} or pass --entry-script")
    keys = tuple(k.strip() for k in env.get(AUTH_KEYS, "").split(",") if k.strip())
    return Settings(
        entry_script=script,
        model_dir=env.get(MODEL_DIR) or None,
        port=_int(env, PORT, DEFAULT_PORT, 1),
        workers=_int(env, WORKER_COUNT, 1, 1),
        timeout_ms=_int(env, SCORING_TIMEOUT_MS, DEFAULT_TIMEOUT_MS, 1),
        max_request_bytes=_int(env, MAX_REQUEST_BYTES, DEFAULT_MAX_REQUEST_BYTES, 1),
        auth_keys=keys,
        max_concurrent_requests=_int(env, MAX_CONCURRENT_REQUESTS, 0, 0),
    )
