"""`ml-deploy logs`: print a deployed service's recent log, as Azure ML's `service.get_logs()` does.

    ./ml-deploy logs --stack local --service diabetes-local [--tail 200]
    ./ml-deploy logs --stack dev --service diabetes-aci          # Azure credentials of the caller
    ./ml-deploy logs --stack prod --service diabetes-aks [--kubeconfig F] [--context C]
    ./ml-deploy logs --stack lab --service diabetes-container    # the container's log, from its engine

Where the log is comes from the service's `logs` stack output: the local target's log file, the
ACI container's log (Azure's container-logs API), the AKS pods' logs (the Kubernetes API, with
your own kubeconfig, e.g. from `az aks get-credentials`), or a local container's log (`docker logs`
on the engine that runs it). A local service whose `init()` failed
during `pulumi up` has no outputs yet; its log file is found from the stack config instead, so the
failure (script name and error) is what this prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from pathlib import Path
from typing import Any, Callable, Optional

from cli import offline
from cli import errors
from cli.engine import stack_outputs
from cli.errors import CliError
from infra import config
from infra.config import ConfigError
from infra.schema import PROJECT_ROOT

DEFAULT_TAIL = 200


class LogsError(CliError):
    """The log cannot be read; the message says why and what to do."""


def source_from_config(stack: str, service: str, root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Where a service's log is, derived from `Pulumi.<stack>.yaml` alone (no outputs needed).

    Only the local target's log has a place known without a deployment's outputs."""
    from providers.local import log_path

    cfg = config.parse(config.project_values(offline.stack_config(stack, root)), root)
    svc = next((s for s in cfg.services if s.name == service), None)
    if svc is None:
        names = ", ".join(s.name for s in cfg.services) or "none"
        raise LogsError(f"stack {stack!r} declares no service {service!r}; it declares: {names}")
    if cfg.workspace.kind != "local":
        raise LogsError(f"service {service!r} has no outputs in stack {stack!r} yet: run `pulumi up` first")
    workspace = (root / cfg.workspace.path).resolve()
    return {"kind": "file", "path": str(log_path(str(workspace / "logs"), service))}


def locate(stack: str, service: str, root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """The service's log source: its `logs` stack output, or what the stack config implies."""
    try:
        services = stack_outputs(stack, "services") or {}
    except CliError:  # no engine, or no state yet: the config may still say where the log is
        services = {}
    found = services.get(service) if isinstance(services, dict) else None
    if isinstance(found, dict) and isinstance(found.get("logs"), dict):
        return found["logs"]
    return source_from_config(stack, service, root)


def read_file(source: dict[str, Any], tail: int) -> str:
    path = Path(source["path"])
    if not path.exists():
        raise LogsError(f"no log at {path}: the service has not started yet")
    with path.open(errors="replace") as f:
        return "".join(deque(f, maxlen=tail))


def read_aci(source: dict[str, Any], tail: int, credential: Any = None, **client_options: Any) -> str:
    """The container's log from Azure's container-logs API (`Containers - List Logs`), with the
    caller's Azure credentials (`az login`, a managed identity, environment variables)."""
    from azure.mgmt.containerinstance import ContainerInstanceManagementClient

    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    client = ContainerInstanceManagementClient(credential, source["subscription_id"], **client_options)
    logs = client.containers.list_logs(
        source["resource_group"], source["container_group"], source["container"], tail=tail
    )
    return logs.content or ""


def read_kubernetes(source: dict[str, Any], tail: int, kubeconfig: Optional[str] = None,
                    context: Optional[str] = None) -> str:
    """Each pod's log (and the previous container's, after a restart: a crash-looping `init()`)."""
    from kubernetes import client as k8s
    from kubernetes import config as kube_config
    from kubernetes.client.exceptions import ApiException

    api_client = kube_config.new_client_from_config(config_file=kubeconfig, context=context)
    core = k8s.CoreV1Api(api_client)
    pods = core.list_namespaced_pod(source["namespace"], label_selector=source["selector"]).items
    if not pods:
        raise LogsError(f"no pods match {source['selector']} in namespace {source['namespace']}")
    out: list[str] = []
    for pod in pods:
        name = str(pod.metadata.name if pod.metadata else "")
        statuses = {s.name: s for s in ((pod.status.container_statuses if pod.status else None) or [])}
        status = statuses.get(source["container"])
        if status is not None and status.restart_count:
            try:
                previous = core.read_namespaced_pod_log(name, source["namespace"], container=source["container"],
                                                        tail_lines=tail, previous=True)
                out.append(f"== {name} (previous container, restarted {status.restart_count}x)\n{previous}")
            except ApiException:
                pass
        try:
            current = core.read_namespaced_pod_log(name, source["namespace"], container=source["container"],
                                                   tail_lines=tail)
        except ApiException as err:
            current = f"(no log: {err.reason})\n"
        out.append(f"== {name}\n{current}")
    return "\n".join(out)


def read_iot_edge(source: dict[str, Any], tail: int) -> str:
    """An IoT Edge module logs on each device, which this machine cannot reach: say where to look."""
    where = ", ".join(source.get("devices") or []) or f"the devices matching {source.get('target_condition')!r}"
    raise LogsError(f"module {source['module']} logs on its devices ({where}, hub {source['hub']}): run "
                    f"`sudo iotedge logs {source['module']} --tail {tail}` on a device")


def read_docker(source: dict[str, Any], tail: int) -> str:
    """The container's log from the engine that runs it (`docker logs`: stdout and stderr)."""
    import subprocess

    host = ["-H", source["docker_host"]] if source.get("docker_host") else []
    result = subprocess.run(["docker", *host, "logs", "--tail", str(tail), source["container"]],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise LogsError(f"no log for container {source['container']}: {result.stderr.strip()}")
    return result.stdout + result.stderr


def read(source: dict[str, Any], tail: int, **kubernetes: Optional[str]) -> str:
    """The recent log from `source` (a service's `logs` output)."""
    readers: dict[str, Callable[[], str]] = {
        "file": lambda: read_file(source, tail),
        "aci": lambda: read_aci(source, tail),
        "kubernetes": lambda: read_kubernetes(source, tail, **kubernetes),
        "iot_edge": lambda: read_iot_edge(source, tail),
        "docker": lambda: read_docker(source, tail),
    }
    kind = source.get("kind")
    if kind not in readers:
        raise LogsError(f"unknown log source {json.dumps(source)}; this ml-deploy reads {', '.join(readers)}")
    return readers[str(kind)]()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ml-deploy logs", description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--stack", required=True, help="the stack the service is in")
    parser.add_argument("--service", required=True, help="the service's name")
    parser.add_argument("--tail", type=int, default=DEFAULT_TAIL, help=f"lines to print (default {DEFAULT_TAIL})")
    parser.add_argument("--kubeconfig", help="AKS: the kubeconfig to use (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="AKS: the kubeconfig context to use")
    errors.add_debug_flag(parser)
    args = parser.parse_args(argv)
    with errors.one_line("ml-deploy logs", args.debug):
        source = locate(args.stack, args.service)
        sys.stdout.write(read(source, args.tail, kubeconfig=args.kubeconfig, context=args.context))
    return 0


if __name__ == "__main__":
    sys.exit(main())
