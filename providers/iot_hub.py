"""IoT Hub's data plane as Pulumi dynamic resources, over the `azure-iot-hub` client: IoT Edge device
identities, the deployment content applied to one device, and hub configurations (deployments at
scale). No Pulumi provider manages these; each class here creates, reads, updates and deletes one
kind through the service REST API the client calls.

The engine pickles each provider into the stack state and runs it in a separate process, so this
module must stay importable from the project root (PYTHONPATH) and every input is plain data: the
hub's host name, a connection string of a shared access policy (secret), ids, and the deployment
content as JSON text (secret: it holds registry credentials).
"""

from __future__ import annotations

import json
from typing import Any, Optional

import pulumi
from azure.iot.hub import IoTHubConfigurationManager, IoTHubRegistryManager
from azure.iot.hub.models import Configuration, ConfigurationContent
from msrest.exceptions import HttpOperationError
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

EDGE_AGENT = "$edgeAgent"
CONFIGURATION_SCHEMA_VERSION = "1.0"
"""The schema version of a hub configuration object (not of the manifest inside it)."""
ENABLED = "enabled"


def _status(err: HttpOperationError) -> Optional[int]:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def _not_found(err: HttpOperationError) -> bool:
    return _status(err) == 404


def _registry(props: dict[str, Any]) -> IoTHubRegistryManager:
    return IoTHubRegistryManager.from_connection_string(props["connection"])


def _configurations(props: dict[str, Any]) -> IoTHubConfigurationManager:
    return IoTHubConfigurationManager.from_connection_string(props["connection"])


def _modules_content(text: str) -> dict[str, Any]:
    return json.loads(text)["modulesContent"]


def _desired(twin_properties: Any) -> dict[str, Any]:
    """A twin's desired properties without the service's bookkeeping (`$metadata`, `$version`)."""
    desired = getattr(twin_properties, "desired", None) or {}
    return {k: v for k, v in desired.items() if not k.startswith("$")}


def _changed(olds: dict[str, Any], news: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    return [k for k in keys if olds.get(k) != news.get(k)]


# ---- IoT Edge device identities -------------------------------------------------------------------

class EdgeDeviceProvider(ResourceProvider):
    """A device identity with the IoT Edge capability and symmetric keys.

    Replaced when its hub or id changes; updated (keys kept) when it was disabled or lost its edge
    capability outside the stack; `read` notices a device deleted outside the stack.
    """

    def _outs(self, props: dict[str, Any], device: Any) -> dict[str, Any]:
        key = device.authentication.symmetric_key
        return {
            **props,
            "status": device.status,
            "iot_edge": bool(device.capabilities and device.capabilities.iot_edge),
            "etag": device.etag,
            "generation_id": device.generation_id,
            # The string an operator gives `iotedge config mp --connection-string` on the device.
            "connection_string": f"HostName={props['hub']};DeviceId={device.device_id};SharedAccessKey={key.primary_key}",
        }

    def create(self, props: dict[str, Any]) -> CreateResult:
        # No keys in the request: IoT Hub generates both.
        device: Any = _registry(props).create_device_with_sas(props["device_id"], None, None, ENABLED, iot_edge=True)
        return CreateResult(id_=device.device_id, outs=self._outs(props, device))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            device: Any = _registry(props).get_device(id_)
        except HttpOperationError as err:
            if _not_found(err):
                return ReadResult(id_=None, outs={})  # type: ignore[arg-type] # gone: the engine drops it
            raise
        return ReadResult(id_=id_, outs=self._outs(props, device))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = _changed(olds, news, ("hub", "device_id"))
        drifted = olds.get("status") != ENABLED or olds.get("iot_edge") is not True
        changes = bool(replaces) or drifted or olds.get("connection") != news.get("connection")
        # A replacement lives on another hub or under another id: no clash with the old one.
        return DiffResult(changes=changes, replaces=replaces, delete_before_replace=False)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        registry = _registry(news)
        current: Any = registry.get_device(id_)
        key = current.authentication.symmetric_key
        if current.status != ENABLED or not (current.capabilities and current.capabilities.iot_edge):
            # Same keys, so a provisioned device keeps working; the etag guards a concurrent change.
            current = registry.update_device_with_sas(id_, current.etag, key.primary_key, key.secondary_key,
                                                      ENABLED, iot_edge=True)
        return UpdateResult(outs=self._outs(news, current))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        try:
            _registry(props).delete_device(id_, "*")
        except HttpOperationError as err:
            if not _not_found(err):
                raise


class EdgeDevice(Resource, module="iot_edge", name="EdgeDevice"):
    """An IoT Edge device identity; `connection_string` is secret."""

    connection_string: pulumi.Output[str]
    device_id: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        outs = {"connection_string": None, "status": None, "iot_edge": None, "etag": None, "generation_id": None}
        secret = pulumi.ResourceOptions(additional_secret_outputs=["connection", "connection_string"])
        super().__init__(EdgeDeviceProvider(), name, {**props, **outs}, pulumi.ResourceOptions.merge(opts, secret))


# ---- the deployment content of one device ---------------------------------------------------------

class DeviceContentProvider(ResourceProvider):
    """The deployment manifest applied to one edge device (`applyConfigurationContent`).

    A new manifest is applied in place; `read` compares the device's `$edgeAgent` desired
    properties with it, so a deployment changed outside the stack is applied again on the next
    `up`; `delete` applies the runtime-only manifest, which removes the scoring module.
    """

    def _apply(self, props: dict[str, Any], content: str) -> None:
        _configurations(props).apply_configuration_on_edge_device(
            props["device_id"], ConfigurationContent(modules_content=_modules_content(content))
        )

    def create(self, props: dict[str, Any]) -> CreateResult:
        self._apply(props, props["content"])
        return CreateResult(id_=props["device_id"], outs={**props, "in_sync": True})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            twin: Any = _registry(props).get_module_twin(props["device_id"], EDGE_AGENT)
        except HttpOperationError as err:
            if _not_found(err):
                return ReadResult(id_=None, outs={})  # type: ignore[arg-type] # the device is gone
            raise
        expected = _modules_content(props["content"])[EDGE_AGENT]["properties.desired"]
        return ReadResult(id_=id_, outs={**props, "in_sync": _desired(twin.properties) == expected})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = _changed(olds, news, ("hub", "device_id"))
        changes = bool(replaces) or olds.get("in_sync") is False or bool(
            _changed(olds, news, ("content", "removal_content", "connection")))
        # A replacement targets another device: apply there first, then clear the old one.
        return DiffResult(changes=changes, replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self._apply(news, news["content"])
        return UpdateResult(outs={**news, "in_sync": True})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        try:
            self._apply(props, props["removal_content"])
        except HttpOperationError as err:
            if not _not_found(err):  # a deleted device runs nothing any more
                raise


class DeviceContent(Resource, module="iot_edge", name="DeviceDeployment"):
    """The deployment applied to one edge device; `content` is secret."""

    in_sync: pulumi.Output[bool]

    def __init__(self, name: str, props: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["connection", "content"])
        super().__init__(DeviceContentProvider(), name, {**props, "in_sync": None},
                         pulumi.ResourceOptions.merge(opts, secret))


# ---- hub configurations: deployments at scale -----------------------------------------------------

class HubConfigurationProvider(ResourceProvider):
    """An IoT Edge deployment at scale: a hub configuration that applies a manifest to every device
    matching a target condition, the highest priority winning.

    IoT Hub cannot change a configuration's content, so a new manifest replaces it (under a new id
    derived from the content, created before the old one is deleted); target condition, priority
    and labels are updated in place.
    """

    def _configuration(self, props: dict[str, Any]) -> Configuration:
        return Configuration(
            id=props["configuration_id"],
            schema_version=CONFIGURATION_SCHEMA_VERSION,
            labels=dict(props.get("labels") or {}),
            content=ConfigurationContent(modules_content=_modules_content(props["content"])),
            target_condition=props["target_condition"],
            priority=int(props["priority"]),
        )

    def _outs(self, props: dict[str, Any], found: Any) -> dict[str, Any]:
        return {**props, "target_condition": found.target_condition, "priority": found.priority,
                "labels": dict(found.labels or {}), "etag": found.etag}

    def create(self, props: dict[str, Any]) -> CreateResult:
        created: Any = _configurations(props).create_configuration(self._configuration(props))
        return CreateResult(id_=created.id, outs=self._outs(props, created))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        try:
            found: Any = _configurations(props).get_configuration(id_)
        except HttpOperationError as err:
            if _not_found(err):
                return ReadResult(id_=None, outs={})  # type: ignore[arg-type]
            raise
        return ReadResult(id_=id_, outs=self._outs(props, found))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = _changed(olds, news, ("hub", "configuration_id", "content"))
        updates = _changed(olds, news, ("target_condition", "priority", "labels", "connection"))
        # A new id is a new configuration: create it before deleting the old one.
        return DiffResult(changes=bool(replaces or updates), replaces=replaces,
                          delete_before_replace="configuration_id" not in replaces)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        manager = _configurations(news)
        current: Any = manager.get_configuration(id_)
        current.target_condition = news["target_condition"]
        current.priority = int(news["priority"])
        current.labels = dict(news.get("labels") or {})
        updated: Any = manager.update_configuration(current, current.etag)
        return UpdateResult(outs=self._outs(news, updated))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        try:
            _configurations(props).delete_configuration(id_, "*")
        except HttpOperationError as err:
            if not _not_found(err):
                raise


class HubConfiguration(Resource, module="iot_edge", name="HubDeployment"):
    """An IoT Edge deployment at scale; `content` is secret."""

    configuration_id: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: Optional[pulumi.ResourceOptions] = None):
        secret = pulumi.ResourceOptions(additional_secret_outputs=["connection", "content"])
        super().__init__(HubConfigurationProvider(), name, {**props, "etag": None},
                         pulumi.ResourceOptions.merge(opts, secret))
