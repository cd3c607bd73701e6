"""`ml-deploy logs`: print a deployed service's recent log, as Azure ML's `service.get_logs()` does.

    ./ml-deploy logs --stack local --service diabetes-local [--tail 200]
    ./ml-deploy logs --stack local --service churn --deployment green   # one deployment of a split service
    ./ml-deploy logs --stack dev --service diabetes-aci          # Azure credentials of the caller
    ./ml-deploy logs --stack prod --service diabetes-aks [--kubeconfig F] [--context C]
    ./ml-deploy logs --stack lab --service diabetes-container    # the container's log, from its engine

Where the log is comes from the service's `logs` stack output, and how it is read from the reader
its target declares (`Target.logs` in infra/targets/): the local target's log file, the ACI
container's log (Azure's container-logs API), the AKS pods' logs (the Kubernetes API, with your own
kubeconfig, e.g. from `az aks get-credentials`), or a local container's log (`docker logs` on the
engine that runs it). A local service whose `init()` failed during `pulumi up` has no outputs yet;
its log file is found from the stack config instead, so the failure (script name and error) is what
this prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from cli import errors, offline
from cli.engine import stack_outputs
from cli.errors import CliError
from infra import config, targets
from infra.deploy import LogOptions, LogsUnavailable
from infra.schema import PROJECT_ROOT

DEFAULT_TAIL = 200


class LogsError(CliError):
    """The log cannot be read; the message says why and what to do."""


def source_from_config(stack: str, service: str, root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Where a service's log is, derived from `Pulumi.<stack>.yaml` alone (no outputs needed), for
    the targets that know it so (`Target.logs_before_outputs`: the local target's log file)."""
    cfg = config.parse(config.project_values(offline.stack_config(stack, root)), root)
    svc = next((s for s in cfg.services if s.name == service), None)
    if svc is None:
        names = ", ".join(s.name for s in cfg.services) or "none"
        raise LogsError(f"stack {stack!r} declares no service {service!r}; it declares: {names}")
    before = targets.get(svc.target).logs_before_outputs
    if before is None:
        raise LogsError(f"service {service!r} has no outputs in stack {stack!r} yet: run `pulumi up` first")
    return before(cfg, svc, root)


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


def read(source: dict[str, Any], tail: int, kubeconfig: Optional[str] = None, context: Optional[str] = None,
         deployment: Optional[str] = None) -> str:
    """The recent log from `source` (a service's `logs` output), by the reader its target declares
    for the source's `kind`."""
    readers = targets.log_readers()
    kind = source.get("kind")
    if kind not in readers:
        raise LogsError(f"unknown log source {json.dumps(source)}; this ml-deploy reads {', '.join(sorted(readers))}")
    try:
        return readers[str(kind)](source, LogOptions(tail, kubeconfig, context, deployment))
    except LogsUnavailable as err:
        raise LogsError(str(err)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ml-deploy logs", description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--stack", required=True, help="the stack the service is in")
    parser.add_argument("--service", required=True, help="the service's name")
    parser.add_argument("--tail", type=int, default=DEFAULT_TAIL, help=f"lines to print (default {DEFAULT_TAIL})")
    parser.add_argument("--kubeconfig", help="AKS: the kubeconfig to use (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="AKS: the kubeconfig context to use")
    parser.add_argument("--deployment", help="a service with deployments: the one to read (default: each, and its router)")
    errors.add_debug_flag(parser)
    args = parser.parse_args(argv)
    with errors.one_line("ml-deploy logs", args.debug):
        source = locate(args.stack, args.service)
        sys.stdout.write(read(source, args.tail, kubeconfig=args.kubeconfig, context=args.context,
                              deployment=args.deployment))
    return 0


if __name__ == "__main__":
    sys.exit(main())
