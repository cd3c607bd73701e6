"""Just enough of Azure Resource Manager's REST API for the dynamic providers that call it directly
(what azure-native cannot do: a registry token's generated password, an online endpoint's traffic
set after its deployments): bearer tokens of whoever runs `pulumi up` (DefaultAzureCredential: `az
login`, a managed identity, environment variables), calls, and long-running operations."""

from __future__ import annotations

import time
from typing import Any, Callable, Optional

import requests

ARM_ENDPOINT = "https://management.azure.com"
POLL_TIMEOUT_S = 300
TIMEOUT_S = 60

TokenSource = Callable[[str], str]
"""Scope (`<resource>/.default`) -> a bearer token (Azure Resource Manager's, Azure ML's data plane's)."""


def default_token(scope: str) -> str:
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential().get_token(scope).token


_token_source: TokenSource = default_token


def token(scope: str) -> str:
    """A bearer token for `scope` (`<resource>/.default`: Resource Manager, Azure ML's data plane), as
    this process gets them."""
    return _token_source(scope)


def use_token_source(source: TokenSource) -> TokenSource:
    """Replace how this process gets ARM tokens (tests answer with a fixed one); returns the old one."""
    global _token_source
    previous, _token_source = _token_source, source
    return previous


class ArmError(RuntimeError):
    def __init__(self, response: requests.Response):
        self.status = response.status_code
        super().__init__(f"{response.request.method} {response.url}: {response.status_code} {response.text[:500]}")


class Arm:
    """Just enough of Azure Resource Manager: authenticated calls and long-running operations."""

    def __init__(self, endpoint: str, api_version: str):
        self.endpoint = endpoint.rstrip("/")
        self.api_version = api_version
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {_token_source(self.endpoint + '/.default')}"

    def call(self, method: str, resource_id: str, body: Optional[dict[str, Any]] = None) -> requests.Response:
        url = f"{self.endpoint}{resource_id}"
        return self.session.request(method, url, params={"api-version": self.api_version}, json=body, timeout=TIMEOUT_S)

    def result(self, response: requests.Response) -> dict[str, Any]:
        """The final body of a (possibly long-running) operation: `Azure-AsyncOperation` is polled
        until a terminal status, `Location` until it stops answering 202; then a POST's result is
        the last poll's body and an update's is the resource itself."""
        if response.status_code not in (200, 201, 202):
            raise ArmError(response)
        async_url = response.headers.get("Azure-AsyncOperation")
        location = response.headers.get("Location")
        post = response.request.method == "POST"
        # "An asynchronous operation initially returns ... 201 (Created) [or] 202 (Accepted)"; 200 is
        # completion (learn.microsoft.com/azure/azure-resource-manager/management/async-operations).
        # Callers that need the resource settled read its provisioningState after (endpoint_traffic.py).
        if response.status_code == 200 or not (async_url or location):
            return _json(response)
        deadline = time.monotonic() + POLL_TIMEOUT_S
        last = response
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{response.request.method} {response.url} did not finish within {POLL_TIMEOUT_S}s")
            time.sleep(min(float(last.headers.get("Retry-After", "1")), 10.0))
            last = self.session.get(str(async_url or location), timeout=TIMEOUT_S)
            if last.status_code >= 400:
                raise ArmError(last)
            if async_url:
                status = _json(last).get("status")
                if status in ("Failed", "Canceled"):
                    raise RuntimeError(f"{response.request.method} {response.url} ended {status}: {last.text[:500]}")
                if status != "Succeeded":
                    continue
                if post:
                    return _json(self.session.get(location, timeout=TIMEOUT_S)) if location else {}
                break
            if last.status_code != 202:
                if post:
                    return _json(last)
                break
        return _json(self.session.get(str(response.url), timeout=TIMEOUT_S))


ENDPOINT_READ_ONLY = ("provisioningState", "scoringUri", "swaggerUri", "openapiUri")
"""An Azure ML endpoint's read-only properties: echoed back by a GET, refused or ignored in a PUT."""


def put_properties(arm: Arm, resource_id: str, changes: dict[str, Any]) -> None:
    """Write `changes` into an Azure ML endpoint's properties: a full PUT of what a GET returns, as the
    endpoints' PATCH takes tags and identity alone (`PartialMinimalTrackedResourceWithIdentity` in the
    machinelearningservices REST spec)."""
    response = arm.call("GET", resource_id)
    if response.status_code != 200:
        raise ArmError(response)
    body = response.json()
    properties = {k: v for k, v in (body.get("properties") or {}).items() if k not in ENDPOINT_READ_ONLY}
    properties.update(changes)
    put = {k: body[k] for k in ("location", "tags", "identity", "kind", "sku") if body.get(k) is not None}
    put["properties"] = properties
    arm.result(arm.call("PUT", resource_id, put))


def settle(arm: Arm, resource_id: str, done: Callable[[dict[str, Any]], bool], timeout_s: float, what: str) -> dict[str, Any]:
    """Read the resource until `done(body)` and its provisioning has finished: the body. An endpoint
    answers the PUT before every reader sees the change (Azure/azure-dev#3881 waits for the same), and
    the next step (deleting a deployment) would otherwise meet an endpoint still busy."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = arm.call("GET", resource_id)
        if response.status_code != 200:
            raise ArmError(response)
        body = response.json()
        state = str((body.get("properties") or {}).get("provisioningState") or "Succeeded")
        if state in ("Failed", "Canceled"):
            raise RuntimeError(f"{resource_id} ended {state} after {what} was written: {response.text[:500]}")
        if done(body) and state == "Succeeded":
            return body
        if time.monotonic() > deadline:
            raise TimeoutError(f"{resource_id} does not report {what} {timeout_s:.0f}s after it was written")
        time.sleep(2)


def _json(response: requests.Response) -> dict[str, Any]:
    return response.json() if response.content else {}
