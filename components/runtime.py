"""One service's scoring runtime, whatever runs it: a `ServiceRuntime` is built once from the
service's config (infra/deploy.py's `service_runtime`) and rendered here for each platform: the
runtime settings and secret variables of a container (ACI, Kubernetes, IoT Edge), and the inputs of a
process this machine starts (the local and container targets' providers). A new runtime setting is
a field here and a line in each rendering, nowhere else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import pulumi

from components.keys import service_keys
from components.service import TlsCertificate
from serving import settings as runtime


SECRET_OUTPUTS = ["primary_key", "secondary_key", "tls_key_pem"]
"""What a process's provider returns that stays secret in the state (its keys, its TLS key)."""


@dataclass(frozen=True)
class ServiceRuntime:
    """What the scoring runtime of one service is told: processes, limits, keys, TLS, telemetry."""

    service_name: str
    """The web service's name: `SERVICE_NAME`, the title of its swagger."""
    workers: int = 1
    timeout_ms: int = runtime.DEFAULT_TIMEOUT_MS
    max_concurrent_requests: int = 0
    """Requests one worker holds at once before answering 503; 0: no limit."""
    auth_enabled: bool = False
    primary_key: Optional[pulumi.Input[str]] = None
    """A given key (secret); generated and kept in state when absent and auth is on."""
    secondary_key: Optional[pulumi.Input[str]] = None
    tls: Optional[TlsCertificate] = None
    """Serve HTTPS with this certificate; every target takes it the same way."""
    app_insights: Optional[pulumi.Input[str]] = None
    """Application Insights' connection string (a secret), when the service sends telemetry."""

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def keys(self, name: str, parent: pulumi.Resource) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        """(primary, secondary), both secret: given or generated when auth is on, empty when it is off."""
        if not self.auth_enabled:
            return pulumi.Output.secret(""), pulumi.Output.secret("")
        return service_keys(name, parent, self.primary_key, self.secondary_key)

    # ---- a container: ACI, Kubernetes, IoT Edge ------------------------------------------------------

    def container_settings(self, port: int) -> runtime.Settings:
        """The runtime's settings in a container listening on `port`, the certificate (when there is
        one) mounted at components/service.py's TLS_DIR; plain values only (see `secret_environ`)."""
        return runtime.Settings(
            port=port, workers=self.workers, timeout_ms=self.timeout_ms,
            max_concurrent_requests=self.max_concurrent_requests, service_name=self.service_name,
            tls_cert_file=self.tls.cert_file if self.tls else None,
            tls_key_file=self.tls.key_file if self.tls else None,
        )

    def secret_environ(self, primary: pulumi.Input[str], secondary: pulumi.Input[str]) -> dict[str, pulumi.Input[str]]:
        """The variables that carry secrets, by name: the accepted keys (auth on; secret as the keys
        are) and App Insights' connection string (the workspace's secret output); each platform passes
        them its own secret way."""
        env: dict[str, pulumi.Input[str]] = {}
        if self.auth_enabled:
            env[runtime.AUTH_KEYS] = pulumi.Output.concat(primary, ",", secondary)
        if self.app_insights is not None:
            env[runtime.APP_INSIGHTS] = self.app_insights
        return env

    # ---- a process on this machine: the local and container targets ---------------------------------

    def process_inputs(self) -> dict[str, Any]:
        """The runtime's part of a local process's or container's provider inputs, under the names
        their diffs compare. TLS only when on, so a plain-HTTP service's inputs are what they always were."""
        inputs: dict[str, Any] = {"workers": self.workers, "auth_enabled": self.auth_enabled,
                                  "timeout_ms": self.timeout_ms}
        if self.tls is not None:
            inputs["tls_cert_pem"] = self.tls.cert_pem
            inputs["tls_key_pem"] = self.tls.key_pem
        return inputs

