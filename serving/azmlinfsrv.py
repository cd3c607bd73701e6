"""`azmlinfsrv`: this runtime behind the command line, settings and stdout of Azure ML's inference server.

    azmlinfsrv --entry_script score.py [--model_dir DIR] [--port 5001] [--worker_count N]
               [--health_port 5000] [--appinsights_instrumentation_key KEY]
               [--access_control_allow_origins "a.com, b.com"] [--config_file config.json]

Images and scripts written for azureml-inference-server-http start it this way; `python -m serving`
stays this runtime's own interface. Settings resolve as the reference resolves them: a flag over its
environment variable over the config file (`--config_file`, `$AZUREML_CONFIG_FILE`, or `config.json`
in `$AML_APP_ROOT` or beside the entry script). What differs from the reference, and why, is listed
in docs/azmlinfsrv.md.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import io
import json
import logging
import logging.config
import os
import re
import sys
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, MutableMapping, Optional

from serving import __version__ as RUNTIME_VERSION
from serving import settings as names
from serving.script import COMPAT_DIR, ScoringScript
from serving.settings import Settings, from_environ

# The reference's environment variables (azureml_inference_server_http/constants.py).
APP_ROOT = "AML_APP_ROOT"
ENTRY_SCRIPT = names.ENTRY_SCRIPT
MODEL_DIR = names.MODEL_DIR
APP_INSIGHTS_ENABLED = "AML_APP_INSIGHTS_ENABLED"
APP_INSIGHTS_KEY = "AML_APP_INSIGHTS_KEY"
WORKER_COUNT = "WORKER_COUNT"
WORKER_TIMEOUT = "WORKER_TIMEOUT"
SERVER_PORT = "SERVER_PORT"
HEALTH_PORT = "HEALTH_PORT"
SEPARATE_HEALTH = "SEPERATE_HEALTH_ENDPOINT"
"""Spelled as the reference spells it."""
SERVER_VERSION = "HTTP_X_MS_SERVER_VERSION"
"""The `x-ms-server-version` header's value; set here unless SERVER_VERSION_LOG_RESPONSE_ENABLED says no."""
SERVER_VERSION_ENABLED = "SERVER_VERSION_LOG_RESPONSE_ENABLED"
CORS_ORIGINS = "AML_CORS_ORIGINS"
CONFIG_FILE = "AZUREML_CONFIG_FILE"
SCORING_TIMEOUT_MS = names.SCORING_TIMEOUT_MS
HOST = "AZMLINFSRV_HOST"
"""This runtime's own: the address to listen on (the reference always binds 0.0.0.0)."""

DEFAULT_PORT = 5001
DEFAULT_HEALTH_PORT = 5000
DEFAULT_HOST = "0.0.0.0"
DEFAULT_WORKER_TIMEOUT_S = 300
DEFAULT_SCORING_TIMEOUT_MS = 3600 * 1000

CONFIG_KEYS = (
    APP_ROOT, "AZUREML_SOURCE_DIRECTORY", ENTRY_SCRIPT, "SERVICE_NAME", "WORKSPACE_NAME", "SERVICE_PATH_PREFIX",
    "SERVICE_VERSION", SCORING_TIMEOUT_MS, "AZUREML_LOG_LEVEL", APP_INSIGHTS_ENABLED, APP_INSIGHTS_KEY,
    "AML_MODEL_DC_STORAGE_ENABLED", "APP_INSIGHTS_LOG_RESPONSE_ENABLED", CORS_ORIGINS, MODEL_DIR, "HOSTNAME",
    "AZUREML_DEBUG_PORT",
)
"""The keys the reference reads from its config file (server/config.py's alias_mapping)."""

LOG_FORMAT = "%(asctime)s %(levelname).1s [%(process)d] %(name)s - %(message)s"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z", re.I)

log = logging.getLogger("azmlinfsrv")
user_log = logging.getLogger("azmlinfsrv.user_script")


def reference_version() -> str:
    """The reference release these stand-ins follow (an installed reference package wins, as for scripts)."""
    if str(COMPAT_DIR) not in sys.path:
        sys.path.append(str(COMPAT_DIR))
    # By name: the package is a stand-in on a path added at run time, out of the type checker's sight.
    return str(importlib.import_module("azureml_inference_server_http").__version__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="azmlinfsrv", description=f"Azure ML Inferencing HTTP server v{reference_version()} "
                                f"(ml-deploy serving {RUNTIME_VERSION})")
    p.add_argument("--entry_script", help="the scoring script")
    p.add_argument("--model_dir", help=f"the model folder, given to the script as ${MODEL_DIR}")
    p.add_argument("--appinsights_instrumentation_key", help="turns App Insights on (see docs/azmlinfsrv.md)")
    p.add_argument("--port", type=_port, help=f"the scoring port (default {DEFAULT_PORT}; ${SERVER_PORT} is ignored)")
    p.add_argument("--health_port", type=_port,
                   help=f"the health port when ${SEPARATE_HEALTH}=true (default {DEFAULT_HEALTH_PORT})")
    p.add_argument("--worker_count", type=_positive, help=f"worker processes (default ${WORKER_COUNT} or 1)")
    p.add_argument("--access_control_allow_origins", help='CORS origins, comma-separated: "a.com, b.com"')
    p.add_argument("--config_file", help="a JSON file of settings (environment variable names as keys)")
    return p


def _port(value: str) -> int:
    port = int(value)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is not within [1, 65535]")
    return port


def _positive(value: str) -> int:
    count = int(value)
    if count <= 0:
        raise ValueError(f"worker count {count} must be greater than zero")
    return count


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = parser()
    try:
        return p.parse_args(argv)
    except SystemExit as err:
        if err.code == 2:  # as the reference: the help after the error, and exit status 1
            print()
            p.print_help()
            raise SystemExit(1) from None
        raise


def merge(args: argparse.Namespace, env: MutableMapping[str, str], cwd: str) -> None:
    """Apply the flags to `env` as the reference does (its amlserver.merge_configuration), flags first."""
    env.setdefault(APP_ROOT, cwd)
    if args.entry_script:
        env[ENTRY_SCRIPT] = os.path.realpath(os.path.join(cwd, args.entry_script))
    if args.model_dir is not None:
        env[MODEL_DIR] = args.model_dir
    if args.worker_count is not None:
        env[WORKER_COUNT] = str(args.worker_count)
    env.setdefault(WORKER_COUNT, "1")
    if env.get(SERVER_VERSION_ENABLED, "true").lower() == "true":
        env.setdefault(SERVER_VERSION, f"azmlinfsrv/{reference_version()}")
    # The reference takes the port from --port only: a SERVER_PORT from outside is overwritten.
    env[SERVER_PORT] = str(args.port or DEFAULT_PORT)
    if env.get(SEPARATE_HEALTH) == "true":
        env[HEALTH_PORT] = str(args.health_port or DEFAULT_HEALTH_PORT)
    elif args.port is not None:
        env[HEALTH_PORT] = str(args.port)
    else:
        env.setdefault(HEALTH_PORT, str(DEFAULT_PORT))
    if args.appinsights_instrumentation_key is not None:
        env[APP_INSIGHTS_ENABLED] = "true"
        env[APP_INSIGHTS_KEY] = args.appinsights_instrumentation_key
    if args.access_control_allow_origins is not None:
        env[CORS_ORIGINS] = args.access_control_allow_origins
    if args.config_file:
        env[CONFIG_FILE] = os.path.realpath(os.path.join(cwd, args.config_file))


def config_file(env: Mapping[str, str]) -> Optional[str]:
    """The config file the reference would read: $AZUREML_CONFIG_FILE, else config.json in the app root or
    beside the entry script; an empty file counts as none."""
    def usable(path: Optional[str]) -> bool:
        return bool(path) and os.path.isfile(str(path)) and os.path.getsize(str(path)) > 0

    if usable(env.get(CONFIG_FILE)):
        return env[CONFIG_FILE]
    script = env.get(ENTRY_SCRIPT)
    for folder in (env.get(APP_ROOT), os.path.dirname(os.path.abspath(script)) if script else None):
        if folder and usable(os.path.join(folder, "config.json")):
            return os.path.join(folder, "config.json")
    return None


def apply_config_file(env: MutableMapping[str, str], path: str) -> list[str]:
    """Fill the settings `env` lacks from the JSON file at `path` (the environment wins); returns unknown keys."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise SystemExit(f"azmlinfsrv: {path} must hold a JSON object of settings")
    for key in CONFIG_KEYS:
        if key in data and data[key] is not None and key not in env:
            value = data[key]
            env[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return [k for k in data if k not in CONFIG_KEYS]


def validate(env: MutableMapping[str, str]) -> list[str]:
    """The reference's checks of the environment; returns the lines it prints."""
    lines = []
    if MODEL_DIR not in env:
        lines += [f"The environment variable '{MODEL_DIR}' has not been set.",
                  "Use the --model_dir command line argument to set it."]
    if env.get(APP_INSIGHTS_ENABLED) == "true" and APP_INSIGHTS_KEY in env:
        if _UUID.match(env[APP_INSIGHTS_KEY]):
            lines.append("Valid Application Insights instrumentation key provided.")
        else:
            env[APP_INSIGHTS_ENABLED] = "false"
            lines += ["Invalid Application Insights instrumentation key provided.",
                      "Application Insights has been disabled."]
    else:
        env[APP_INSIGHTS_ENABLED] = "false"
    return lines


def has_flask_cors() -> bool:
    return importlib.util.find_spec("flask_cors") is not None


def banner(env: Mapping[str, str], cors_available: bool) -> list[str]:
    """The reference's startup text: version, settings and routes, in its words (log pipelines match them)."""
    described = (
        (ENTRY_SCRIPT, "Entry Script Name"), (MODEL_DIR, "Model Directory"), (CONFIG_FILE, "Config File"),
        (WORKER_COUNT, "Worker Count"), (WORKER_TIMEOUT, "Worker Timeout (seconds)"), (SERVER_PORT, "Server Port"),
        (HEALTH_PORT, "Health Port"), (APP_INSIGHTS_ENABLED, "Application Insights Enabled"),
        (APP_INSIGHTS_KEY, "Application Insights Key"), (SERVER_VERSION, "Inferencing HTTP server version"),
        (CORS_ORIGINS, "CORS for the specified origins"), (SEPARATE_HEALTH, "Create dedicated endpoint for health"),
    )
    lines = ["", f"Azure ML Inferencing HTTP server v{reference_version()} (ml-deploy serving {RUNTIME_VERSION})",
             "", "", "Server Settings", "---------------"]
    for var, what in described:
        if var == APP_INSIGHTS_KEY and var in env:
            lines.append(f"{what}: AppInsights key provided")
        elif var == CORS_ORIGINS and var in env:
            lines.append(f"{what}: Enabling CORS for {env[var]}" if cors_available else
                         f"{what}: CORS cannot be enabled because the flask-cors package is not installed.")
        else:
            lines.append(f"{what}: {env.get(var)}")
    lines += ["", "", "Server Routes", "---------------",
              f"Liveness Probe: GET   127.0.0.1:{env[HEALTH_PORT]}/",
              f"Score:          POST  127.0.0.1:{env[SERVER_PORT]}/score", ""]
    return lines


def settings_from(env: Mapping[str, str]) -> Settings:
    """This runtime's settings for the merged environment."""
    script = env.get(ENTRY_SCRIPT, "")
    if script and not os.path.isabs(script):
        script = os.path.join(env[APP_ROOT], script)
    # gunicorn (the reference's server) kills a worker silent for WORKER_TIMEOUT seconds, so a run()
    # ends at the earlier of that and SCORING_TIMEOUT_MS; here that run() gets its 504 then.
    worker_timeout_s = _int(env, WORKER_TIMEOUT, DEFAULT_WORKER_TIMEOUT_S)
    timeout_ms = min(_int(env, SCORING_TIMEOUT_MS, DEFAULT_SCORING_TIMEOUT_MS), worker_timeout_s * 1000)
    ours = {k: v for k, v in env.items() if k not in (names.PORT, names.MODEL_DIR)}
    ours.update({names.ENTRY_SCRIPT: script, names.PORT: env[SERVER_PORT], names.WORKER_COUNT: env[WORKER_COUNT],
                 names.SCORING_TIMEOUT_MS: str(timeout_ms), names.ACCESS_LOG: "1"})
    settings = from_environ(ours)
    # AZUREML_MODEL_DIR reaches the script exactly as given (the reference keeps a relative path).
    return replace(settings, host=env.get(HOST) or DEFAULT_HOST, model_dir=None)


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"azmlinfsrv: {name}={raw!r} is not a whole number") from None
    if value < 1:
        raise SystemExit(f"azmlinfsrv: {name}={raw!r} must be at least 1")
    return value


# ---- stdout ----------------------------------------------------------------------------------
class _UtcFormatter(logging.Formatter):
    converter = time.gmtime


class PrintToLog(io.TextIOBase):
    """sys.stdout for the script: each line it prints becomes one `azmlinfsrv.print` log line, at once."""

    def __init__(self, logger: logging.Logger, stream: io.TextIOBase):
        super().__init__()
        self.logger = logger
        self.stream = stream
        self.pending = ""
        self.lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.lock:
            self.pending += text
            *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.logger.info(line)
        return len(text)

    def flush(self) -> None:
        with self.lock:
            line, self.pending = self.pending, ""
        if line:
            self.logger.info(line)

    def fileno(self) -> int:
        return self.stream.fileno()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")


def setup_logging(env: Mapping[str, str]) -> None:
    """Logs on stdout, unbuffered, in the reference's format (UTC); its logging.json, when the app has one."""
    stdout = io.TextIOWrapper(io.FileIO(sys.stdout.fileno(), "w", closefd=False), encoding="utf-8",
                              errors="backslashreplace", write_through=True)
    sys.stdout = stdout
    handler = logging.StreamHandler(stdout)
    handler.setFormatter(_UtcFormatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    script = env.get(ENTRY_SCRIPT)
    for folder in (env.get(APP_ROOT), os.path.dirname(script) if script else None):
        path = os.path.join(folder, "logging.json") if folder else None
        if path and os.path.isfile(path):
            if str(COMPAT_DIR) not in sys.path:  # its formatters name azureml_inference_server_http.log_config
                sys.path.append(str(COMPAT_DIR))
            with open(path, encoding="utf-8") as f:
                logging.config.dictConfig(json.load(f))
            # dictConfig disables the loggers it does not name; the runtime's own must keep reporting.
            for name in ("serving", "azmlinfsrv", "azmlinfsrv.print", "azmlinfsrv.user_script"):
                logging.getLogger(name).disabled = False
            log.info("Loaded logging config from %s", path)
            break
    # What the script prints: one log line per printed line (the reference's print hook).
    sys.stdout = PrintToLog(logging.getLogger("azmlinfsrv.print"), stdout)


def _log_init(init: Callable[[ScoringScript], None]) -> Callable[[ScoringScript], None]:
    def logged(script: ScoringScript) -> None:
        user_log.info("Found user script at %s", script.path)
        user_log.info("Invoking user's init function")
        init(script)
        user_log.info("Users's init has completed successfully")  # sic: the reference's words

    return logged


# ---- the separate health port ----------------------------------------------------------------
class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = b"Healthy" if self.path.split("?")[0] == "/" else b""
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not logged
        pass


def start_health_server(host: str, port: int) -> ThreadingHTTPServer:
    """`GET /` answered `Healthy` on its own port, by the master (see docs/azmlinfsrv.md)."""
    server = ThreadingHTTPServer((host, port), _Health)
    server.daemon_threads = True
    # Workers are forked from this process and must not hold the health port open after it exits.
    os.register_at_fork(after_in_child=server.socket.close)
    threading.Thread(target=server.serve_forever, name="health", daemon=True).start()
    return server


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    env = os.environ
    setup_logging(env)
    if not (args.entry_script or args.config_file):
        log.error("Error!")
        log.error("Either provide an entry_script using --entry_script or provide a path to the configuration "
                  "file using --config_file")
        sys.exit(1)
    merge(args, env, os.getcwd())
    path = config_file(env)
    if path:
        unknown = apply_config_file(env, path)
        if unknown:
            log.warning("Found extra keys in the config file that are not supported by the server.\n"
                        "Extra keys = %s", unknown)
    for line in validate(env):
        print(line, file=_raw_stdout())
    cors = has_flask_cors()
    for line in banner(env, cors):
        print(line, file=_raw_stdout())
    if CORS_ORIGINS in env and not cors:
        # As the reference: without flask-cors it serves without CORS. Enabling it here would widen
        # what browsers may do with an existing deployment that moved over unchanged.
        del env[CORS_ORIGINS]
    if not env.get(ENTRY_SCRIPT):
        log.error("no entry script: neither --entry_script nor %s in %s", ENTRY_SCRIPT, path or "a config file")
        sys.exit(1)
    # No App Insights client here: the key only reaches the script's environment (docs/azmlinfsrv.md).
    log.info("Starting up app insights client: none in this runtime (Application Insights Enabled: %s)",
             env[APP_INSIGHTS_ENABLED])
    settings = settings_from(env)
    ScoringScript.init = _log_init(ScoringScript.init)  # type: ignore[method-assign]
    if env.get(SEPARATE_HEALTH) == "true":
        start_health_server(settings.host, int(env[HEALTH_PORT]))
    from serving.server import serve  # after the environment is final: serving reads it on import

    sys.exit(serve(settings))


def _raw_stdout() -> Any:
    stream = sys.stdout
    return stream.stream if isinstance(stream, PrintToLog) else stream


if __name__ == "__main__":
    main()
