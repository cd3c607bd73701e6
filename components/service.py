"""What every target's service components share: probe timings, the Azure tags of a service, and
the TLS certificate the runtime serves HTTPS with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pulumi

# Every namespace ml-deploy creates for scoring pods enforces the Pod Security "restricted" level
# that its pods are checked against (tests/test_pod_security.py), so a hand-made change that
# weakens them is refused by the cluster too (kubernetes.io Pod Security Admission; the labels and
# values as in kubernetes/website examples/security/podsecurity-restricted.yaml).
SCORING_NAMESPACE_LABELS = {
    "app.kubernetes.io/managed-by": "ml-deploy",
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/warn-version": "latest",
}

TLS_DIR = "/etc/scoring-tls"
"""Where a container's certificate and key are mounted (a secret volume)."""
TLS_CERT_NAME = "cert.pem"
TLS_KEY_NAME = "key.pem"


@dataclass(frozen=True)
class ProbeTimings:
    """How an orchestrator probes the runtime's liveness (`/`) and readiness (`/ready`) endpoints.

    The defaults are Azure ML's for AKS web services (`AksWebservice.deploy_configuration`:
    initial_delay_seconds 310, period_seconds 10, timeout_seconds 2, success_threshold 1,
    failure_threshold 3; learn.microsoft.com/python/api/azureml-core/azureml.core.webservice.akswebservice).
    """

    initial_delay_seconds: int = 310
    period_seconds: int = 10
    timeout_seconds: int = 2
    success_threshold: int = 1
    failure_threshold: int = 3

    def startup_failure_threshold(self, startup_period_seconds: int) -> int:
        """Startup-probe failures allowed, polling every `startup_period_seconds`, so that `init()`
        gets at least as long as the delay promised it: `initial_delay_seconds`, then the liveness
        failures that would have restarted it."""
        budget = self.initial_delay_seconds + self.period_seconds * self.failure_threshold
        return max(1, -(-budget // startup_period_seconds))


def azure_tags(description: str, tags: dict[str, str]) -> dict[str, str]:
    """A service's Azure resource tags: the user's tags, plus its description under `description`
    unless the user set that tag (Azure resources have no description field of their own)."""
    return {"description": description, **tags} if description else dict(tags)


@dataclass(frozen=True)
class TlsCertificate:
    """A service's HTTPS certificate and key (both secrets) and the DNS name clients use."""

    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]
    cname: Optional[str] = None

    @classmethod
    def from_files(cls, cert: Path, key: Path, cname: Optional[str] = None) -> "TlsCertificate":
        """Read the PEM files now; the contents only ever travel as secrets."""
        return cls(pulumi.Output.secret(cert.read_text()), pulumi.Output.secret(key.read_text()), cname)

    @property
    def cert_file(self) -> str:
        return f"{TLS_DIR}/{TLS_CERT_NAME}"

    @property
    def key_file(self) -> str:
        return f"{TLS_DIR}/{TLS_KEY_NAME}"


class ScoringService(pulumi.ComponentResource):
    """A deployed web service, on whatever target: the outputs its component exposes (the service
    contract every target keeps; infra/program.py makes them the stack's `services.<name>`)."""

    scoring_uri: pulumi.Output[str]
    """Where the service scores (`.../score`)."""
    swagger_uri: pulumi.Output[str]
    """Its OpenAPI document (`.../swagger.json`)."""
    primary_key: pulumi.Output[str]
    """The auth key (secret); empty when auth is off."""
    secondary_key: pulumi.Output[str]
    """The second accepted key, for rotation (secret); empty when auth is off."""

    def register_service_outputs(self, **more: pulumi.Input[Any]) -> None:
        """`register_outputs` with the contract's four and `more`: a component's last call."""
        self.register_outputs({"scoring_uri": self.scoring_uri, "swagger_uri": self.swagger_uri,
                               "primary_key": self.primary_key, "secondary_key": self.secondary_key, **more})
