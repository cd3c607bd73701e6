"""`ml-deploy call`: post a JSON file to a scoring service and print the answer, as Azure ML's `service.run` does.

    ./ml-deploy call --stack local --service diabetes-local FILE   # URI and key from stack outputs
    ./ml-deploy call --uri http://127.0.0.1:5001/score [--key KEY] FILE
    ./ml-deploy call --stack lab --service diabetes-k8s [--kubeconfig F] [--context C] FILE
    ./ml-deploy call --stack local --service churn --deployment green FILE   # one deployment, past the split

A service whose scoring URI is a cluster DNS name (`target: kubernetes` with `service_type:
ClusterIP` or `NodePort`) is called through a port-forward to one of its ready pods, which this
command opens through the Kubernetes API with your kubeconfig and closes again.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Optional

from cli import errors
from cli.engine import stack_service
from cli.errors import CliError


DEPLOYMENT_HEADER = "azureml-model-deployment"
"""Sends a request to one deployment of a split service whatever the weights (Azure ML's header; the
router honours it: serving/router.py)."""


def _headers(key: str | None, deployment: str | None = None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if deployment:
        headers[DEPLOYMENT_HEADER] = deployment
    return headers


def call(uri: str, body: bytes, key: str | None = None, timeout_s: float = 60,
         deployment: str | None = None) -> tuple[int, bytes]:
    """POST `body` as JSON to `uri` (to one `deployment` of a split service, if named); returns
    (status, response body). CliError when nothing answers."""
    request = urllib.request.Request(uri, data=body, headers=_headers(key, deployment), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise CliError(f"no answer from {uri}: {reason} (is the service up? `pulumi refresh` shows what "
                       "still runs, `pulumi up` starts what does not)") from None


CLUSTER_DOMAIN = ".svc.cluster.local"


def in_cluster(uri: str) -> bool:
    """Whether `uri` names a Service by its cluster DNS name, which only the cluster resolves."""
    return (urllib.parse.urlsplit(uri).hostname or "").endswith(CLUSTER_DOMAIN)


def call_through_cluster(uri: str, body: bytes, key: Optional[str], source: dict[str, Any],
                         kubeconfig: Optional[str] = None, context: Optional[str] = None,
                         timeout_s: float = 60, deployment: Optional[str] = None) -> tuple[int, bytes]:
    """POST `body` to one ready pod of the service `source` (its `logs` output: namespace, the
    service's own pods' selector (a split service's router), container) through a port-forward the
    Kubernetes API opens for this one request."""
    from kubernetes import client as k8s
    from kubernetes import config as kube_config
    from kubernetes.stream import portforward

    api = k8s.CoreV1Api(kube_config.new_client_from_config(config_file=kubeconfig, context=context))
    # The client's models type every field Optional; a listed pod has its metadata, spec and status.
    pods: list[Any] = api.list_namespaced_pod(source["namespace"], label_selector=source["selector"]).items
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))]
    if not ready:
        raise CliError(f"no ready pod matches {source['selector']} in namespace {source['namespace']} "
                       f"({len(pods)} pod(s)): `./ml-deploy logs` shows why")
    pod: Any = ready[0]
    container: Any = next(c for c in pod.spec.containers if c.name == source["container"])
    port = container.ports[0].container_port
    forward = portforward(api.connect_get_namespaced_pod_portforward, pod.metadata.name, source["namespace"],
                          ports=str(port))
    try:
        sock = forward.socket(port)
        sock.settimeout(timeout_s)
        parts = urllib.parse.urlsplit(uri)
        if parts.scheme == "https":
            # The pod's certificate names the service's public name, not the forwarded socket.
            context_ = ssl.create_default_context()
            context_.check_hostname, context_.verify_mode = False, ssl.CERT_NONE
            sock = context_.wrap_socket(sock, server_hostname=parts.hostname)
        connection = http.client.HTTPConnection(parts.hostname or "localhost", port, timeout=timeout_s)
        connection.sock = sock
        connection.request("POST", parts.path or "/score", body=body,
                           headers={**_headers(key, deployment), "Host": parts.netloc})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        forward.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ml-deploy call", description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--stack", help="read the URI and key from this stack's outputs (needs the pulumi CLI)")
    parser.add_argument("--service", help="with --stack: the service's name")
    parser.add_argument("--uri", help="the service's scoring URI")
    parser.add_argument("--key", help="the service's key, when auth is enabled")
    parser.add_argument("--kubeconfig", help="a service inside a cluster: the kubeconfig (default: $KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--context", help="a service inside a cluster: the kubeconfig context")
    parser.add_argument("--deployment", help="a service with deployments: send the request to this one, "
                        "whatever the split (the azureml-model-deployment header)")
    parser.add_argument("file", type=Path, help="JSON file with the input, e.g. scoring_templates/sample-request.json")
    errors.add_debug_flag(parser)
    args = parser.parse_args(argv)
    if bool(args.stack) == bool(args.uri) or bool(args.stack) != bool(args.service):
        parser.error("give either --stack and --service, or --uri")
    with errors.one_line("ml-deploy call", args.debug):
        outputs: dict[str, Any] = {}
        if args.stack:
            outputs = stack_service(args.stack, args.service)
            args.uri = str(outputs["scoring_uri"])
            args.key = args.key or str(outputs.get("primary_key") or "")
        body = args.file.read_bytes()
        try:
            json.loads(body)
        except json.JSONDecodeError as err:
            raise CliError(f"{args.file} is not valid JSON: {err}") from None
        source = outputs.get("logs")
        if in_cluster(args.uri) and isinstance(source, dict) and source.get("kind") == "kubernetes":
            status, answer = call_through_cluster(args.uri, body, args.key, source, args.kubeconfig, args.context,
                                                  deployment=args.deployment)
        elif in_cluster(args.uri):
            raise CliError(f"{args.uri} resolves only inside its cluster: call it with --stack and --service, "
                           "which port-forward to one of its pods")
        else:
            status, answer = call(args.uri, body, args.key, deployment=args.deployment)
    print(answer.decode("utf-8", "replace"))
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
