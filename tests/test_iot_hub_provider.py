"""The IoT Edge dynamic providers for real through the `azure-iot-hub` client, against a stand-in of
the IoT Hub service REST API on 127.0.0.1.

No IoT Hub emulator exists, so the stand-in below serves the routes the client calls, as Microsoft's
REST reference describes them (api-version 2021-04-12): device identities (`PUT/GET/DELETE
/devices/{id}`, keys generated when the request has none, 409 on a second create, If-Match on
updates), module twins (`GET /twins/{id}/modules/{mid}`), `POST /devices/{id}/applyConfigurationContent`
and configurations (`PUT/GET/DELETE /configurations/{id}`, content fixed once created). It checks
every request's SharedAccessSignature against the policy key, over HTTPS with a certificate from a
CA made for the test (the client only speaks https). It is a stand-in: it proves what the providers
send and how they read answers, not how the real service behaves beyond that reference.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any, Iterator

import pytest
from msrest.exceptions import HttpOperationError

from content import edge_manifest as em
from providers.iot_hub import DeviceContentProvider, EdgeDeviceProvider, HubConfigurationProvider
from tests.helpers import https_server

API_VERSION = "2021-04-12"
POLICY = "ml-deploy"


class Hub:
    """The stand-in's state: what a hub would hold."""

    def __init__(self) -> None:
        self.key = base64.b64encode(secrets.token_bytes(32)).decode()
        self.devices: dict[str, dict[str, Any]] = {}
        self.twins: dict[tuple[str, str], dict[str, Any]] = {}
        self.configurations: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.counter = 0

    def etag(self) -> str:
        self.counter += 1
        return base64.b64encode(str(self.counter).encode()).decode()


def _authorized(header: str, hub: Hub, host: str) -> bool:
    """A service SAS token: `SharedAccessSignature sr=<host>&sig=<HMAC-SHA256 of "sr\\nse">&se=<expiry>&skn=<policy>`."""
    if not header.startswith("SharedAccessSignature "):
        return False
    fields = dict(urllib.parse.parse_qsl(header.split(" ", 1)[1]))
    if fields.get("skn") != POLICY or urllib.parse.unquote_plus(fields.get("sr", "")) != host:
        return False
    if int(fields.get("se", "0")) < time.time():
        return False
    message = f"{urllib.parse.quote_plus(host)}\n{fields['se']}".encode()
    expected = base64.b64encode(hmac.new(base64.b64decode(hub.key), message, hashlib.sha256).digest()).decode()
    return hmac.compare_digest(expected, fields.get("sig", ""))


def make_handler(hub: Hub, host: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            pass

        def _send(self, status: int, body: Any = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            if data:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, code: str) -> None:
            self._send(status, {"Message": f"ErrorCode:{code};{code}", "ExceptionMessage": ""})

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            return json.loads(self.rfile.read(length)) if length else None

        def _route(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            if urllib.parse.parse_qs(url.query).get("api-version") != [API_VERSION]:
                return self._error(400, "InvalidApiVersion")
            if not _authorized(self.headers.get("Authorization", ""), hub, host[0]):
                return self._error(401, "IotHubUnauthorizedAccess")
            parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
            with hub.lock:
                hub.requests.append((self.command, url.path))
                match (self.command, parts):
                    case ("PUT", ["devices", device_id]):
                        return self._put_device(device_id, self._body())
                    case ("GET", ["devices", device_id]):
                        found = hub.devices.get(device_id)
                        return self._send(200, found) if found else self._error(404, "DeviceNotFound")
                    case ("DELETE", ["devices", device_id]):
                        if hub.devices.pop(device_id, None) is None:
                            return self._error(404, "DeviceNotFound")
                        for key in [k for k in hub.twins if k[0] == device_id]:
                            del hub.twins[key]
                        return self._send(204)
                    case ("GET", ["twins", device_id, "modules", module_id]):
                        twin = hub.twins.get((device_id, module_id))
                        return self._send(200, twin) if twin else self._error(404, "ModuleNotFound")
                    case ("POST", ["devices", device_id, "applyConfigurationContent"]):
                        return self._apply(device_id, self._body())
                    case ("PUT", ["configurations", config_id]):
                        return self._put_configuration(config_id, self._body())
                    case ("GET", ["configurations", config_id]):
                        found = hub.configurations.get(config_id)
                        return self._send(200, found) if found else self._error(404, "ConfigurationNotFound")
                    case ("DELETE", ["configurations", config_id]):
                        if hub.configurations.pop(config_id, None) is None:
                            return self._error(404, "ConfigurationNotFound")
                        return self._send(204)
            return self._error(404, "NoSuchRoute")

        def _put_device(self, device_id: str, body: dict[str, Any]) -> None:
            existing = hub.devices.get(device_id)
            if_match = self.headers.get("If-Match")
            if existing is not None and if_match is None:
                return self._error(409, "DeviceAlreadyExists")
            if existing is None and if_match not in (None, "*", '"*"'):
                return self._error(404, "DeviceNotFound")
            if existing is not None and if_match not in ("*", '"*"', f'"{existing["etag"]}"'):
                return self._error(412, "PreconditionFailed")
            keys = (body.get("authentication") or {}).get("symmetricKey") or {}
            generated = {k: keys.get(k) or base64.b64encode(secrets.token_bytes(32)).decode()
                         for k in ("primaryKey", "secondaryKey")}
            device = {
                "deviceId": device_id,
                "generationId": existing["generationId"] if existing else secrets.token_hex(8),
                "etag": hub.etag(),
                "status": body.get("status") or "enabled",
                "authentication": {"type": "sas", "symmetricKey": generated},
                "capabilities": {"iotEdge": bool((body.get("capabilities") or {}).get("iotEdge"))},
                "connectionState": "Disconnected",
            }
            hub.devices[device_id] = device
            if device["capabilities"]["iotEdge"]:
                for module_id in ("$edgeAgent", "$edgeHub"):
                    hub.twins.setdefault((device_id, module_id), self._twin(device_id, module_id, {}))
            return self._send(200, device)

        def _twin(self, device_id: str, module_id: str, desired: dict[str, Any]) -> dict[str, Any]:
            version = hub.etag()
            return {"deviceId": device_id, "moduleId": module_id, "etag": version, "version": 1,
                    "properties": {"desired": {**desired, "$metadata": {"$lastUpdated": "2026-01-01T00:00:00Z"},
                                               "$version": 1}, "reported": {}}}

        def _apply(self, device_id: str, body: dict[str, Any]) -> None:
            device = hub.devices.get(device_id)
            if device is None:
                return self._error(404, "DeviceNotFound")
            if not device["capabilities"]["iotEdge"]:
                return self._error(400, "OperationNotAllowedForNonEdgeDevice")
            modules = body.get("modulesContent") or {}
            if "$edgeAgent" not in modules or "$edgeHub" not in modules:
                return self._error(400, "InvalidConfigurationContent")
            for key in [k for k in hub.twins if k[0] == device_id and k[1] not in modules]:
                del hub.twins[key]
            for module_id, content in modules.items():
                hub.twins[(device_id, module_id)] = self._twin(device_id, module_id, content["properties.desired"])
            return self._send(204)

        def _put_configuration(self, config_id: str, body: dict[str, Any]) -> None:
            existing = hub.configurations.get(config_id)
            if_match = self.headers.get("If-Match")
            if existing is not None and if_match is None:
                return self._error(409, "ConfigurationAlreadyExists")
            if existing is not None:
                if if_match not in ("*", f'"{existing["etag"]}"', existing["etag"]):
                    return self._error(412, "PreconditionFailed")
                if body.get("content") != existing["content"]:
                    return self._error(400, "ConfigurationContentCannotBeUpdated")
            configuration = {
                "id": config_id, "schemaVersion": body.get("schemaVersion"), "labels": body.get("labels") or {},
                "content": body.get("content"), "targetCondition": body.get("targetCondition"),
                "priority": body.get("priority"), "etag": hub.etag(),
                "createdTimeUtc": existing["createdTimeUtc"] if existing else "2026-01-01T00:00:00Z",
                "lastUpdatedTimeUtc": "2026-01-02T00:00:00Z",
            }
            hub.configurations[config_id] = configuration
            return self._send(200, configuration)

        do_GET = do_PUT = do_POST = do_DELETE = _route

    return Handler


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Iterator[tuple[Hub, str]]:
    """(the stand-in's state, a connection string of the hub's policy)."""
    state, host = Hub(), [""]
    with https_server(make_handler(state, host), tmp_path) as (address, ca):
        host[0] = address
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))  # the client's requests session trusts this CA
        yield state, f"HostName={address};SharedAccessKeyName={POLICY};SharedAccessKey={state.key}"


def props(connection: str, **more: Any) -> dict[str, Any]:
    return {"hub": connection.split(";")[0].split("=", 1)[1], "connection": connection, **more}


def content(image: str = "diabetes:1") -> str:
    creds = {"reg": em.RegistryCredential("reg.azurecr.io", "token", "secret")}
    module = em.Module("diabetes-edge", f"reg.azurecr.io/{image}", 5001, 5001, {"WORKER_COUNT": "1"})
    return json.dumps(em.deployment([module], creds, {}))


RUNTIME_ONLY = json.dumps(em.runtime_only())


# ---- device identities -----------------------------------------------------------------------------

def test_a_device_is_created_with_the_edge_capability_and_a_connection_string(hub):
    state, connection = hub
    created = EdgeDeviceProvider().create(props(connection, device_id="line-1"))
    device = state.devices["line-1"]
    assert created.id == "line-1" and device["capabilities"] == {"iotEdge": True} and device["status"] == "enabled"
    key = device["authentication"]["symmetricKey"]["primaryKey"]
    assert created.outs["connection_string"] == f"HostName={props(connection)['hub']};DeviceId=line-1;SharedAccessKey={key}"
    assert ("line-1", "$edgeAgent") in state.twins and ("line-1", "$edgeHub") in state.twins


def test_a_second_run_changes_nothing(hub):
    _, connection = hub
    provider, inputs = EdgeDeviceProvider(), props(connection, device_id="line-1")
    outs = provider.create(inputs).outs
    read = provider.read("line-1", outs)
    assert read.id == "line-1" and read.outs == outs
    assert provider.diff("line-1", read.outs, inputs).changes is False


def test_a_device_disabled_outside_the_stack_is_enabled_again_with_the_same_keys(hub):
    state, connection = hub
    provider, inputs = EdgeDeviceProvider(), props(connection, device_id="line-1")
    outs = provider.create(inputs).outs
    state.devices["line-1"]["status"] = "disabled"
    read = provider.read("line-1", outs)
    diff = provider.diff("line-1", read.outs, inputs)
    assert read.outs["status"] == "disabled" and diff.changes is True and diff.replaces == []
    updated = provider.update("line-1", read.outs, inputs).outs
    assert state.devices["line-1"]["status"] == "enabled"
    assert updated["connection_string"] == outs["connection_string"]


def test_a_device_deleted_outside_the_stack_is_noticed(hub):
    state, connection = hub
    provider = EdgeDeviceProvider()
    outs = provider.create(props(connection, device_id="line-1")).outs
    del state.devices["line-1"]
    assert provider.read("line-1", outs).id is None


def test_deleting_a_device_removes_its_identity_and_tolerates_one_already_gone(hub):
    state, connection = hub
    provider = EdgeDeviceProvider()
    outs = provider.create(props(connection, device_id="line-1")).outs
    provider.delete("line-1", outs)
    assert "line-1" not in state.devices and ("line-1", "$edgeAgent") not in state.twins
    provider.delete("line-1", outs)
    assert ("DELETE", "/devices/line-1") in state.requests


def test_a_new_device_id_replaces_the_device(hub):
    _, connection = hub
    provider = EdgeDeviceProvider()
    outs = provider.create(props(connection, device_id="line-1")).outs
    diff = provider.diff("line-1", outs, props(connection, device_id="line-9"))
    assert diff.replaces == ["device_id"]


def test_a_wrong_policy_key_is_refused(hub):
    state, connection = hub
    wrong = connection.replace(state.key, base64.b64encode(b"x" * 32).decode())
    with pytest.raises(HttpOperationError) as caught:
        EdgeDeviceProvider().create(props(wrong, device_id="line-1"))
    assert caught.value.response.status_code == 401 and state.devices == {}


# ---- the deployment of one device --------------------------------------------------------------------

@pytest.fixture
def device(hub) -> tuple[Hub, str]:
    state, connection = hub
    EdgeDeviceProvider().create(props(connection, device_id="line-1"))
    return state, connection


def deployment(connection: str, image: str = "diabetes:1") -> dict[str, Any]:
    return props(connection, device_id="line-1", content=content(image), removal_content=RUNTIME_ONLY)


def agent_desired(state: Hub) -> dict[str, Any]:
    return {k: v for k, v in state.twins[("line-1", "$edgeAgent")]["properties"]["desired"].items()
            if not k.startswith("$")}


def test_the_manifest_is_applied_to_the_device(device):
    state, connection = device
    created = DeviceContentProvider().create(deployment(connection))
    expected = json.loads(content())["modulesContent"]
    assert created.outs["in_sync"] is True
    assert agent_desired(state) == expected["$edgeAgent"]["properties.desired"]
    assert ("line-1", "diabetes-edge") not in state.twins  # a custom module's twin exists only with content for it


def test_an_applied_manifest_reads_in_sync_and_a_rerun_changes_nothing(device):
    _, connection = device
    provider, inputs = DeviceContentProvider(), deployment(connection)
    outs = provider.create(inputs).outs
    read = provider.read("line-1", outs)
    assert read.outs["in_sync"] is True and provider.diff("line-1", read.outs, inputs).changes is False


def test_a_new_image_is_applied_in_place(device):
    state, connection = device
    provider = DeviceContentProvider()
    outs = provider.create(deployment(connection)).outs
    news = deployment(connection, "diabetes:2")
    diff = provider.diff("line-1", outs, news)
    assert diff.changes is True and diff.replaces == []
    provider.update("line-1", outs, news)
    image = agent_desired(state)["modules"]["diabetes-edge"]["settings"]["image"]
    assert image == "reg.azurecr.io/diabetes:2"


def test_a_deployment_changed_outside_the_stack_is_applied_again(device):
    state, connection = device
    provider, inputs = DeviceContentProvider(), deployment(connection)
    outs = provider.create(inputs).outs
    state.twins[("line-1", "$edgeAgent")]["properties"]["desired"]["modules"] = {}
    read = provider.read("line-1", outs)
    assert read.outs["in_sync"] is False and provider.diff("line-1", read.outs, inputs).changes is True
    provider.update("line-1", read.outs, inputs)
    assert "diabetes-edge" in agent_desired(state)["modules"]


def test_deleting_the_deployment_leaves_the_runtime_only(device):
    state, connection = device
    provider = DeviceContentProvider()
    outs = provider.create(deployment(connection)).outs
    provider.delete("line-1", outs)
    assert agent_desired(state)["modules"] == {} and agent_desired(state)["systemModules"]


def test_the_deployment_of_a_deleted_device_is_noticed_and_deleting_it_is_harmless(device):
    state, connection = device
    provider = DeviceContentProvider()
    outs = provider.create(deployment(connection)).outs
    del state.devices["line-1"]
    state.twins.clear()
    assert provider.read("line-1", outs).id is None
    provider.delete("line-1", outs)


# ---- deployments at scale: hub configurations --------------------------------------------------------

def configuration(connection: str, config_id: str = "diabetes-fleet-0a", image: str = "diabetes:1",
                  priority: int = 10) -> dict[str, Any]:
    return props(connection, configuration_id=config_id, content=content(image),
                 target_condition="tags.site='plant-7'", priority=priority, labels={"team": "ml"})


def test_a_hub_deployment_is_created_with_its_condition_and_priority(hub):
    state, connection = hub
    created = HubConfigurationProvider().create(configuration(connection))
    stored = state.configurations["diabetes-fleet-0a"]
    assert created.id == "diabetes-fleet-0a"
    assert (stored["targetCondition"], stored["priority"], stored["labels"]) == ("tags.site='plant-7'", 10, {"team": "ml"})
    assert stored["content"]["modulesContent"] == json.loads(content())["modulesContent"]


def test_a_hub_deployment_rerun_changes_nothing(hub):
    _, connection = hub
    provider, inputs = HubConfigurationProvider(), configuration(connection)
    outs = provider.create(inputs).outs
    read = provider.read("diabetes-fleet-0a", outs)
    assert provider.diff("diabetes-fleet-0a", read.outs, inputs).changes is False


def test_a_new_priority_is_updated_in_place(hub):
    state, connection = hub
    provider = HubConfigurationProvider()
    outs = provider.create(configuration(connection)).outs
    news = configuration(connection, priority=20)
    diff = provider.diff("diabetes-fleet-0a", outs, news)
    assert diff.changes is True and diff.replaces == []
    updated = provider.update("diabetes-fleet-0a", outs, news).outs
    assert state.configurations["diabetes-fleet-0a"]["priority"] == 20 and updated["etag"] != outs["etag"]


def test_new_content_is_a_new_deployment_created_before_the_old_is_deleted(hub):
    state, connection = hub
    provider = HubConfigurationProvider()
    outs = provider.create(configuration(connection)).outs
    news = configuration(connection, config_id="diabetes-fleet-1b", image="diabetes:2")
    diff = provider.diff("diabetes-fleet-0a", outs, news)
    assert set(diff.replaces) == {"configuration_id", "content"} and diff.delete_before_replace is False
    provider.create(news)
    provider.delete("diabetes-fleet-0a", outs)
    assert list(state.configurations) == ["diabetes-fleet-1b"]


def test_new_content_under_the_same_id_is_deleted_before_it_is_created_again(hub):
    _, connection = hub
    provider = HubConfigurationProvider()
    outs = provider.create(configuration(connection)).outs
    same_id = configuration(connection, image="diabetes:2")
    assert provider.diff("diabetes-fleet-0a", outs, same_id).delete_before_replace is True
    with pytest.raises(HttpOperationError) as caught:  # why: the id is taken until the old one is gone
        provider.create(same_id)
    assert caught.value.response.status_code == 409
    provider.delete("diabetes-fleet-0a", outs)
    assert provider.create(same_id).id == "diabetes-fleet-0a"


def test_a_hub_deployment_deleted_outside_the_stack_is_noticed(hub):
    state, connection = hub
    provider = HubConfigurationProvider()
    outs = provider.create(configuration(connection)).outs
    state.configurations.clear()
    assert provider.read("diabetes-fleet-0a", outs).id is None
    provider.delete("diabetes-fleet-0a", outs)


def test_a_priority_changed_outside_the_stack_is_read_back(hub):
    state, connection = hub
    provider, inputs = HubConfigurationProvider(), configuration(connection)
    outs = provider.create(inputs).outs
    state.configurations["diabetes-fleet-0a"]["priority"] = 99
    read = provider.read("diabetes-fleet-0a", copy.deepcopy(outs))
    assert read.outs["priority"] == 99 and provider.diff("diabetes-fleet-0a", read.outs, inputs).changes is True


# ---- through the real Pulumi engine ---------------------------------------------------------------

def test_the_providers_work_pickled_into_state_under_the_real_engine(hub, tmp_path, monkeypatch):
    """Up, a no-op preview, a new manifest (the device deployment updated, the hub deployment
    replaced, the device kept), a device deleted outside the stack noticed by refresh and created
    again, destroy: the engine pickles each provider into the state and runs it in its own process."""
    import subprocess

    import pulumi
    from pulumi import automation as auto

    from components.iot_edge_service import configuration_id
    from providers.iot_hub import DeviceContent, EdgeDevice, HubConfiguration
    from tests.helpers import ROOT, engine_environ

    state, connection = hub
    backend = tmp_path / "state"
    backend.mkdir()
    # The provider process imports providers.iot_hub from the project itself.
    env = engine_environ(ROOT, backend)
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the Automation API runs `pulumi` with this process's environment
    image = {"tag": "diabetes:1"}

    def program() -> None:
        target = {"hub": props(connection)["hub"], "connection": pulumi.Output.secret(connection)}
        manifest = content(image["tag"])
        device = EdgeDevice("line-1", {**target, "device_id": "line-1"})
        DeviceContent("line-1-deployment", {**target, "device_id": device.device_id,
                                            "content": pulumi.Output.secret(manifest), "removal_content": RUNTIME_ONLY})
        HubConfiguration("fleet", {**target, "configuration_id": configuration_id("fleet", manifest),
                                   "content": pulumi.Output.secret(manifest), "target_condition": "tags.site='plant-7'",
                                   "priority": 10, "labels": {}})
        pulumi.export("connection_string", device.connection_string)

    stack = auto.create_or_select_stack(
        "edge", project_name="iot-edge-providers", program=program,
        opts=auto.LocalWorkspaceOptions(
            pulumi_home=str(tmp_path / "home"), env_vars=env, pulumi_command=auto.PulumiCommand(),
            project_settings=auto.ProjectSettings(name="iot-edge-providers", runtime="python")),
    )
    quiet = {"on_output": lambda _: None}
    try:
        assert stack.up(**quiet).summary.result == "succeeded"
        key = state.devices["line-1"]["authentication"]["symmetricKey"]["primaryKey"]
        output = stack.outputs()["connection_string"]
        assert output.secret and output.value.endswith(f"SharedAccessKey={key}")
        stored = next(backend.rglob("edge.json")).read_text()
        assert key not in stored and state.key not in stored and "diabetes:1" not in stored
        assert set(stack.preview(**quiet).change_summary) == {"same"}

        image["tag"] = "diabetes:2"
        preview = stack.preview(**quiet).change_summary
        assert {op: n for op, n in preview.items() if op != "same"} == {"update": 1, "replace": 1}, preview
        stack.up(**quiet)
        assert agent_desired(state)["modules"]["diabetes-edge"]["settings"]["image"] == "reg.azurecr.io/diabetes:2"
        assert list(state.configurations) == [configuration_id("fleet", content("diabetes:2"))]
        assert state.devices["line-1"]["authentication"]["symmetricKey"]["primaryKey"] == key

        del state.devices["line-1"]
        state.twins.clear()
        refreshed = stack.refresh(**quiet).summary.resource_changes or {}
        assert refreshed.get("delete") == 2, refreshed  # the device and its deployment
        assert stack.up(**quiet).summary.resource_changes.get("create") == 2  # type: ignore[union-attr]
        assert "diabetes-edge" in agent_desired(state)["modules"]
        assert stack.outputs()["connection_string"].value != output.value  # a new identity, new keys
    finally:
        stack.destroy(**quiet)
    assert state.devices == {} and state.configurations == {}
