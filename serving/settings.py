"""The scoring runtime's settings: environment variable names and defaults.

Deployment components import these names to configure containers, so this module imports nothing
outside the standard library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from serving.aml_env import SERVICE_NAME

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
# Limits for a public endpoint, and the process model (see the README's runtime section).
MAX_QUEUE_WAIT_MS = "MAX_QUEUE_WAIT_MS"
MAX_HEADER_BYTES = "MAX_HEADER_BYTES"
HEADER_TIMEOUT_SECONDS = "HEADER_TIMEOUT_SECONDS"
BODY_TIMEOUT_SECONDS = "BODY_TIMEOUT_SECONDS"
KEEPALIVE_TIMEOUT_SECONDS = "KEEPALIVE_TIMEOUT_SECONDS"
MAX_CONNECTIONS = "MAX_CONNECTIONS"
SHUTDOWN_GRACE_SECONDS = "SHUTDOWN_GRACE_SECONDS"
# HTTPS served by the runtime itself. Not SSL_CERT_FILE: OpenSSL and Python read that name as the
# CA bundle a *client* trusts, so reusing it would change every outgoing call the script makes.
TLS_CERT_FILE = "SCORING_TLS_CERT_FILE"
"""PEM certificate chain (the server certificate first); with TLS_KEY_FILE turns on HTTPS."""
TLS_KEY_FILE = "SCORING_TLS_KEY_FILE"
"""PEM private key of that certificate (unencrypted)."""
# Model data collection (off unless an account URL or a connection string is set).
COLLECT_ACCOUNT_URL = "MODEL_DATA_COLLECTION_ACCOUNT_URL"
COLLECT_CONNECTION_STRING = "MODEL_DATA_COLLECTION_CONNECTION_STRING"
COLLECT_CONTAINER = "MODEL_DATA_COLLECTION_CONTAINER"
COLLECT_PREFIX = "MODEL_DATA_COLLECTION_PREFIX"
COLLECT_FLUSH_SECONDS = "MODEL_DATA_COLLECTION_FLUSH_SECONDS"
# Taking over a port from a running predecessor (the local target's updates; see serving.server).
REUSE_PORT = "SERVING_REUSE_PORT"
"""1: bind the port with SO_REUSEPORT, so it can be shared with the process this one replaces, and
listen only once a worker has finished init(). Off unless asked for: two servers started by hand on
one port by mistake must fail, not silently share it."""
ACCESS_LOG = "SERVING_ACCESS_LOG"
"""1: log each /score and /swagger.json request on the `azmlinfsrv` logger as Azure ML's server does
(`POST /score 200 1.234ms 17`); `azmlinfsrv` turns it on."""
NOTIFY_SOCKET = "NOTIFY_SOCKET"
"""systemd's readiness protocol (sd_notify(3)): the runtime sends `READY=1` to this unix datagram
socket once it accepts connections with a worker ready (`@name`: an abstract socket)."""

DEFAULT_PORT = 5001
DEFAULT_TIMEOUT_MS = 60_000
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_QUEUE_WAIT_MS = 5_000
DEFAULT_MAX_HEADER_BYTES = 32 * 1024
DEFAULT_HEADER_TIMEOUT_S = 10
DEFAULT_BODY_TIMEOUT_S = 60
DEFAULT_KEEPALIVE_TIMEOUT_S = 5
DEFAULT_MAX_CONNECTIONS = 1_000
# Under Kubernetes' default 30 s termination grace, so draining ends before the SIGKILL.
DEFAULT_SHUTDOWN_GRACE_S = 25
ROUTER_EXTRA_WAIT_S = 10.0
"""How long past the scoring timeout a split's router waits for a deployment's answer before a 504 of
its own (the deployment answers a stuck run() with its own 504 at the timeout). Here, not in
serving/router.py, so the program and the policy pack read it without the router's httptools."""

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
    """Requests one worker holds at once (running or queued) before answering 503; 0 means no limit."""
    max_queue_wait_ms: int = DEFAULT_MAX_QUEUE_WAIT_MS
    """How long a request may wait for its worker's scoring thread before it is answered 503."""
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    """Request line and headers together; over it 431."""
    header_timeout_s: int = DEFAULT_HEADER_TIMEOUT_S
    """From a connection's opening (or a request's first byte) to the end of its headers; then 408."""
    body_timeout_s: int = DEFAULT_BODY_TIMEOUT_S
    """From the end of the headers to the end of the body; then 408."""
    keepalive_timeout_s: int = DEFAULT_KEEPALIVE_TIMEOUT_S
    """An idle kept-alive connection is closed after this long."""
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    """Open connections per worker; past it the longest-idle one is closed, or the new one gets 503."""
    shutdown_grace_s: int = DEFAULT_SHUTDOWN_GRACE_S
    """After SIGTERM, requests in flight get this long to finish; then the process exits 0."""
    tls_cert_file: str | None = None
    """With tls_key_file: serve HTTPS (probes included) instead of HTTP."""
    tls_key_file: str | None = None
    service_name: str = ""
    """The web service's name (`SERVICE_NAME`, as Azure ML sets it): the title of `/swagger.json`."""
    reuse_port: bool = False
    """Share the port with SO_REUSEPORT and listen only once a worker is ready (see REUSE_PORT)."""
    access_log: bool = False
    """Log each scoring and swagger request (see ACCESS_LOG)."""

    @property
    def scheme(self) -> str:
        """`https` when a certificate and key are set, else `http`."""
        return "https" if self.tls_cert_file else "http"

    def environ(self) -> dict[str, str]:
        """These settings as the environment variables the runtime reads."""
        env = {
            PORT: str(self.port),
            WORKER_COUNT: str(self.workers),
            SCORING_TIMEOUT_MS: str(self.timeout_ms),
            MAX_REQUEST_BYTES: str(self.max_request_bytes),
            MAX_CONCURRENT_REQUESTS: str(self.max_concurrent_requests),
            MAX_QUEUE_WAIT_MS: str(self.max_queue_wait_ms),
            MAX_HEADER_BYTES: str(self.max_header_bytes),
            HEADER_TIMEOUT_SECONDS: str(self.header_timeout_s),
            BODY_TIMEOUT_SECONDS: str(self.body_timeout_s),
            KEEPALIVE_TIMEOUT_SECONDS: str(self.keepalive_timeout_s),
            MAX_CONNECTIONS: str(self.max_connections),
            SHUTDOWN_GRACE_SECONDS: str(self.shutdown_grace_s),
        }
        if self.service_name:
            env[SERVICE_NAME] = self.service_name
        if self.entry_script:
            env[ENTRY_SCRIPT] = self.entry_script
        if self.model_dir is not None:
            env[MODEL_DIR] = self.model_dir
        if self.auth_keys:
            env[AUTH_KEYS] = ",".join(self.auth_keys)
        if self.tls_cert_file and self.tls_key_file:
            env[TLS_CERT_FILE] = self.tls_cert_file
            env[TLS_KEY_FILE] = self.tls_key_file
        if self.reuse_port:
            env[REUSE_PORT] = "1"
        if self.access_log:
            env[ACCESS_LOG] = "1"
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
    cert, key = env.get(TLS_CERT_FILE) or None, env.get(TLS_KEY_FILE) or None
    if bool(cert) != bool(key):
        raise SystemExit(f"serving: set both {TLS_CERT_FILE} and {TLS_KEY_FILE} for HTTPS, or neither; "
                         f"only {TLS_CERT_FILE if cert else TLS_KEY_FILE} is set")
    return Settings(
        entry_script=script,
        model_dir=env.get(MODEL_DIR) or None,
        port=_int(env, PORT, DEFAULT_PORT, 1),
        workers=_int(env, WORKER_COUNT, 1, 1),
        timeout_ms=_int(env, SCORING_TIMEOUT_MS, DEFAULT_TIMEOUT_MS, 1),
        max_request_bytes=_int(env, MAX_REQUEST_BYTES, DEFAULT_MAX_REQUEST_BYTES, 1),
        auth_keys=keys,
        max_concurrent_requests=_int(env, MAX_CONCURRENT_REQUESTS, 0, 0),
        max_queue_wait_ms=_int(env, MAX_QUEUE_WAIT_MS, DEFAULT_MAX_QUEUE_WAIT_MS, 1),
        max_header_bytes=_int(env, MAX_HEADER_BYTES, DEFAULT_MAX_HEADER_BYTES, 1024),
        header_timeout_s=_int(env, HEADER_TIMEOUT_SECONDS, DEFAULT_HEADER_TIMEOUT_S, 1),
        body_timeout_s=_int(env, BODY_TIMEOUT_SECONDS, DEFAULT_BODY_TIMEOUT_S, 1),
        keepalive_timeout_s=_int(env, KEEPALIVE_TIMEOUT_SECONDS, DEFAULT_KEEPALIVE_TIMEOUT_S, 1),
        max_connections=_int(env, MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS, 1),
        shutdown_grace_s=_int(env, SHUTDOWN_GRACE_SECONDS, DEFAULT_SHUTDOWN_GRACE_S, 0),
        tls_cert_file=cert,
        tls_key_file=key,
        reuse_port=_int(env, REUSE_PORT, 0, 0) > 0,
        access_log=_int(env, ACCESS_LOG, 0, 0) > 0,
    )
