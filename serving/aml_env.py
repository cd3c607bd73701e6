"""Azure ML's own environment variables that the runtime honours, named as Azure ML's server reads them.

The runtime's own settings live in `serving.settings`; these are the ones scripts, deployments and
clients already use with Azure ML's inference server, read once per worker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Optional

from serving import __version__

APP_ROOT = "AML_APP_ROOT"
"""The app folder (scripts and `azureml-models/`); the working directory when unset."""
CORS_ORIGINS = "AML_CORS_ORIGINS"
"""Comma-separated origins allowed to call the service from a browser; `*` for any."""
SERVER_VERSION_ENABLED = "SERVER_VERSION_LOG_RESPONSE_ENABLED"
"""`false` (or anything but `true`) drops the `x-ms-server-version` header."""
SERVER_VERSION_VALUE = "HTTP_X_MS_SERVER_VERSION"
"""The header's value when set (`azmlinfsrv` sets it as Azure ML's server does); else this runtime's name."""
SERVICE_NAME = "SERVICE_NAME"
SERVICE_VERSION = "SERVICE_VERSION"
SERVICE_PATH_PREFIX = "SERVICE_PATH_PREFIX"

SERVER_VERSION = f"ml-deploy-serving/{__version__}"


@dataclass(frozen=True)
class AmlEnv:
    """The values of the variables above."""

    cors_origins: tuple[str, ...] = ()
    server_version: Optional[str] = SERVER_VERSION
    service_name: str = "ML service"
    service_version: str = "1.0"
    service_path_prefix: str = ""


def from_environ(env: Optional[Mapping[str, str]] = None) -> AmlEnv:
    env = os.environ if env is None else env
    origins = tuple(o.strip() for o in env.get(CORS_ORIGINS, "").split(",") if o.strip())
    enabled = env.get(SERVER_VERSION_ENABLED, "true").lower() == "true"
    prefix = env.get(SERVICE_PATH_PREFIX, "").strip("/")
    return AmlEnv(
        cors_origins=origins,
        server_version=(env.get(SERVER_VERSION_VALUE) or SERVER_VERSION) if enabled else None,
        service_name=env.get(SERVICE_NAME, "ML service"),
        service_version=env.get(SERVICE_VERSION, "1.0"),
        service_path_prefix=f"/{prefix}" if prefix else "",
    )
