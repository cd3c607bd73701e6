"""`ml-deploy logs` readers: the local log file, ACI's container-logs API and the Kubernetes pod-log
API, each through its real client library.

Azure and AKS cannot be reached from here: the ACI and Kubernetes readers talk to stand-ins on
127.0.0.1 that answer the two or three REST routes they call, shaped as Microsoft's REST reference
(Containers - List Logs) and the Kubernetes API (list pods, read pod log) define them.
"""

from __future__ import annotations

import datetime
import json
import ssl
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from azure.core.credentials import AccessToken

from cli import logs
from infra import targets
from infra.deploy import LogOptions
from tests.helpers import self_signed_certificate

Route = Callable[[str, dict[str, list[str]]], tuple[int, str, bytes]]


class _Handler(BaseHTTPRequestHandler):
    route: Route
    seen: list[str]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urllib.parse.urlsplit(self.path)
        self.seen.append(self.path)
        status, kind, body = self.route(url.path, urllib.parse.parse_qs(url.query))
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def _serve(route: Route, context: ssl.SSLContext | None = None) -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Handler", (_Handler,), {"route": staticmethod(route), "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if context else "http"
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_file_source_prints_the_last_lines(tmp_path):
    log = tmp_path / "svc.log"
    log.write_text("".join(f"line {i}\n" for i in range(500)))
    assert logs.read({"kind": "file", "path": str(log)}, tail=3) == "line 497\nline 498\nline 499\n"


def test_a_missing_log_file_says_the_service_has_not_started(tmp_path):
    with pytest.raises(logs.LogsError, match="has not started"):
        logs.read({"kind": "file", "path": str(tmp_path / "none.log")}, tail=10)


def test_an_unknown_source_kind_is_a_clear_error():
    with pytest.raises(logs.LogsError, match="unknown log source"):
        logs.read({"kind": "ftp"}, tail=10)


class _Token:
    """A credential that hands out a fixed token (the stand-in checks that it is sent)."""

    def get_token(self, *scopes: str, **_kwargs: Any) -> AccessToken:
        return AccessToken("stand-in-token", int(datetime.datetime.now().timestamp()) + 3600)


def test_aci_logs_come_from_the_container_logs_api(tmp_path):
    source = {"kind": "aci", "subscription_id": "sub-1", "resource_group": "rg-1",
              "container_group": "mlws-dev-svc", "container": "scoring"}
    expected_path = ("/subscriptions/sub-1/resourceGroups/rg-1/providers/Microsoft.ContainerInstance/"
                     "containerGroups/mlws-dev-svc/containers/scoring/logs")

    def route(path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        if path != expected_path:
            return 404, "application/json", b'{"error": {"code": "NotFound", "message": "no such route"}}'
        return 200, "application/json", json.dumps({"content": f"init() failed (tail={query['tail'][0]})\n"}).encode()

    cert, key = self_signed_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = _serve(route, context)
    base, seen = next(server)
    try:
        text = targets.get("aci").logs["aci"](source, LogOptions(tail=25), credential=_Token(), base_url=base, connection_verify=str(cert))
    finally:
        next(server, None)
    assert text == "init() failed (tail=25)\n"
    assert "api-version=" in seen[0]


def test_kubernetes_logs_include_the_previous_container_of_a_restarted_pod(tmp_path):
    source = {"kind": "kubernetes", "cluster": "prod", "namespace": "ml-deploy",
              "selector": "app.kubernetes.io/name=diabetes-aks", "container": "scoring"}
    pods = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [{
        "metadata": {"name": "diabetes-aks-7d9f-abcde", "namespace": "ml-deploy"},
        "status": {"containerStatuses": [{"name": "scoring", "restartCount": 2, "ready": False, "image": "x",
                                          "imageID": "", "state": {}}]},
    }]}

    def route(path: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        if path == "/api/v1/namespaces/ml-deploy/pods":
            assert query["labelSelector"] == ["app.kubernetes.io/name=diabetes-aks"]
            return 200, "application/json", json.dumps(pods).encode()
        if path == "/api/v1/namespaces/ml-deploy/pods/diabetes-aks-7d9f-abcde/log":
            assert query["container"] == ["scoring"]
            if query.get("previous") == ["true"]:
                return 200, "text/plain", b"ERROR cannot load /var/azureml-app/score.py: no model\n"
            return 200, "text/plain", b"INFO starting\n"
        return 404, "application/json", b"{}"

    server = _serve(route)
    base, _ = next(server)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "stand-in",
        "clusters": [{"name": "stand-in", "cluster": {"server": base}}],
        "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }))
    try:
        text = logs.read(source, tail=50, kubeconfig=str(kubeconfig), context=None)
    finally:
        next(server, None)
    assert "previous container, restarted 2x" in text
    assert "cannot load /var/azureml-app/score.py: no model" in text and "INFO starting" in text
