"""A traffic split on Kubernetes (`target: kubernetes` or `aks` with `deployments`): what AksService
builds for it. Each deployment runs as its own scoring Deployment behind a cluster-internal Service;
the service's own Deployment and Service become a router that sends each request to one deployment
by weight (serving/router.py, the local target's router, shipped in every scoring image).

Why a router rather than replica counts or a Gateway: a Service selecting every deployment's pods
splits by ready-pod count, so 90/10 needs ten pods and an autoscaler moves the split with the load;
a Gateway API `HTTPRoute` with weights needs an implementation installed in the cluster (on AKS the
Istio-based service mesh add-on or Application Gateway for Containers), which a plain cluster lacks.
The router works on any cluster, splits exactly, mirrors, and honours `azureml-model-deployment`
as the local target and Azure ML's endpoints do (docs/traffic.md compares the ways).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi

from components.service import TLS_CERT_NAME, TLS_DIR, TLS_KEY_NAME
from content.bundle import SERVING_PORT

ROUTER_CONFIG = "router.json"
ROUTER_COMPONENT = "router"
ROUTER_HEALTH_PORT = 5002
"""Where the router answers its own readiness (every path of the serving port is forwarded)."""
ROUTER_CPU_CORES = 0.25
"""The router's CPU request and limit: it spends about 127 us of CPU per request here
(benchmarks/RESULTS.md, the local traffic router), so a quarter core forwards about 2,000 requests/s;
its autoscaler (the service's settings) adds routers past the target utilization."""
ROUTER_MEMORY_GB = 0.25
DEPLOYMENT_PORT = 80
"""A deployment's Service port: plain HTTP inside the cluster (TLS, when on, ends at the router)."""


@dataclass(frozen=True)
class SplitDeployment:
    """One deployment of a split service: its image and its share of the requests."""

    name: str
    image_ref: pulumi.Input[str]
    traffic: int


@dataclass(frozen=True)
class TrafficSplit:
    """The deployments behind a service and the mirror."""

    deployments: list[SplitDeployment]
    mirror: dict[str, int] = field(default_factory=dict)
    """Deployment -> percent of the requests copied to it, its answers dropped."""


def router_config(routes: list[dict[str, Any]], mirror: dict[str, int]) -> str:
    """serving/router.py's config: each deployment's address and share, and the mirror."""
    return json.dumps({"generation": 0, "routes": routes, "mirror": mirror}, indent=1, sort_keys=True) + "\n"


def router_command(config_dir: str, health_port: int, timeout_ms: int, tls: bool) -> list[str]:
    """The router's command in a scoring image (its python, with the `serving` package on the path)."""
    command = ["python", "-m", "serving.router", "--config", f"{config_dir}/{ROUTER_CONFIG}",
               "--status", "/tmp/router-status.json", "--host", "0.0.0.0", "--port", str(SERVING_PORT),
               "--health-port", str(health_port), "--timeout-ms", str(timeout_ms)]
    if tls:
        command += ["--tls-cert", f"{TLS_DIR}/{TLS_CERT_NAME}", "--tls-key", f"{TLS_DIR}/{TLS_KEY_NAME}"]
    return command
