"""What every target's service components share: probe timings and the Azure tags of a service."""

from __future__ import annotations

from dataclasses import dataclass


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


def azure_tags(description: str, tags: dict[str, str]) -> dict[str, str]:
    """A service's Azure resource tags: the user's tags, plus its description under `description`
    unless the user set that tag (Azure resources have no description field of their own)."""
    return {"description": description, **tags} if description else dict(tags)
