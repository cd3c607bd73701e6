"""`target: iot_edge`: the scoring image as a module on IoT Edge devices, through a hub from `iot_hubs`."""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Iterable, Literal, Mapping, Optional

from pydantic import Field, field_validator

from components.iot_edge_service import IotEdgeService, IotEdgeServiceArgs, scoring_module
from components.iot_hub import IotHub, IotHubArgs
from components.naming import Kind, azure_name
from content import edge_manifest
from infra.deploy import DeployContext, Deployed, LogOptions, LogsUnavailable, MockResource, service_runtime
from infra.schema import ServiceBase, StackConfig, Strict
from infra.targets import ReplaceRules, SpecRead, Target, register
from policy.endpoints import LOOPBACK, Exposure
from serving import settings as runtime

# IoT Hub tiers (learn.microsoft.com/azure/iot-hub/iot-hub-scaling): the basic tiers have no device
# or module twins, so no IoT Edge; units per hub at most 1 (F1), 200 (S1, S2) or 10 (S3), one free
# hub per subscription (learn.microsoft.com/azure/iot-hub/iot-hub-devguide-quotas-throttling).
MAX_UNITS = {"F1": 1, "S1": 200, "S2": 200, "S3": 10}
BASIC_TIERS = ("B1", "B2", "B3")
# Automatic deployments per hub: 10 on a free hub, 100 on a paid one
# (learn.microsoft.com/azure/iot-edge/iot-edge-limits-and-restrictions).
MAX_DEPLOYMENTS = {"F1": 10, "S1": 100, "S2": 100, "S3": 100}
# IoT Hub takes more characters in a device id; this subset is safe in Pulumi resource names too.
DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# What the service's settings decide (port, workers, scoring_timeout_ms, auth_enabled,
# enable_app_insights) or the image sets; `env` may set the runtime's other variables.
RESERVED_ENV = (runtime.PORT, runtime.WORKER_COUNT, runtime.SCORING_TIMEOUT_MS, runtime.AUTH_KEYS,
                runtime.APP_INSIGHTS, runtime.ENTRY_SCRIPT, runtime.MODEL_DIR)

class IotHubConfig(Strict):
    """One entry of `ml-deploy:iot_hubs`: an IoT hub created for the stack."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,14}[a-z0-9]$")
    sku: str = "S1"
    """F1 or S1-S3."""
    capacity: int = Field(default=1, ge=1)
    location: Optional[str] = None
    """Region of the hub; the workspace's when unset."""

    @field_validator("sku")
    @classmethod
    def _standard_tier(cls, sku: str) -> str:
        if sku in BASIC_TIERS:
            raise ValueError(f"{sku} is a basic tier, which has no device twins and cannot run IoT Edge: "
                             f"use F1 or S1-S3")
        if sku not in MAX_UNITS:
            raise ValueError(f"unknown IoT Hub SKU {sku!r}: use F1, S1, S2 or S3")
        return sku


class IotEdgeServiceConfig(ServiceBase):
    """A service on IoT Edge devices (`target: iot_edge`): device identities the stack creates, or a
    deployment at scale to every device a target condition matches."""

    target: Literal["iot_edge"]
    hub: str
    """An IoT hub name from `iot_hubs`."""
    devices: list[Annotated[str, Field(pattern=DEVICE_ID)]] = Field(default_factory=list)
    """Edge device identities created and kept by the stack, each given the deployment directly."""
    target_condition: Optional[str] = Field(default=None, min_length=1)
    """Or: a hub deployment for every device this condition matches (`tags.site='plant-7'`)."""
    priority: Optional[int] = Field(default=None, ge=0)
    """With target_condition: the highest priority wins on a device several deployments target."""
    port: int = Field(default=runtime.DEFAULT_PORT, ge=1, le=65535)
    """Host port bound on the device."""
    env: dict[str, str] = Field(default_factory=dict)
    routes: dict[str, str] = Field(default_factory=dict)
    """edgeHub routes by name; none by default."""
    workers: int = Field(default=1, ge=1)
    restart_policy: Literal["always", "on-failure", "on-unhealthy", "never"] = "always"
    store_and_forward_ttl_secs: int = Field(default=edge_manifest.STORE_AND_FORWARD_TTL_SECS, ge=0,
                                            le=2_147_483_647)
    registry_password_days: Optional[int] = Field(default=365, ge=1)
    """Lifetime of the registry token's password; a new one is made on an `up` in its last 30 days."""


def _hub_problems(cfg: StackConfig) -> list[str]:
    problems: list[str] = []
    free: Optional[int] = None
    for i, hub in enumerate(cfg.section("iot_hubs", IotHubConfig)):
        if hub.capacity > MAX_UNITS[hub.sku]:
            problems.append(f"iot_hubs[{i}].capacity: a {hub.sku} hub has at most {MAX_UNITS[hub.sku]} units")
        if hub.sku == "F1":
            if free is not None:
                problems.append(f"iot_hubs[{i}].sku: one free (F1) hub per subscription, and iot_hubs[{free}] is one")
            free = i if free is None else free
    return problems


def _service_problems(cfg: StackConfig) -> list[str]:
    hubs = {h.name: h for h in cfg.section("iot_hubs", IotHubConfig)}
    problems: list[str] = []
    claimed: dict[tuple[str, str], int] = {}
    deployments: dict[str, list[int]] = {}
    for i, svc in cfg.services_of(IotEdgeServiceConfig):
        path = f"services[{i}]"
        if cfg.promote_from is not None:
            # Devices pull with a token of the registry the image is in, and on a promoted stack that
            # is the source stack's registry: the token would be a resource in another stack's registry.
            problems.append(f"{path}.target: iot_edge services cannot run on a promoted stack yet (their devices "
                            f"pull with a token of the source stack's registry); deploy them from a stack that "
                            f"builds its images")
        if svc.hub not in hubs:
            problems.append(f"{path}.hub: no IoT hub named {svc.hub!r} in iot_hubs")
        if svc.devices and svc.target_condition is not None:
            problems.append(f"{path}.target_condition: not allowed with devices (set one or the other)")
        elif not svc.devices and svc.target_condition is None:
            problems.append(f"{path}.devices: give the edge devices to create, or a target_condition")
        if svc.priority is not None and svc.target_condition is None:
            problems.append(f"{path}.priority: only with target_condition")
        if svc.target_condition is not None:
            deployments.setdefault(svc.hub, []).append(i)
        for j, device in enumerate(svc.devices):
            owner = claimed.setdefault((svc.hub, device), i)
            if owner != i:
                problems.append(f"{path}.devices[{j}]: device {device!r} on hub {svc.hub!r} is already deployed by "
                                f"services[{owner}] (a device runs one deployment)")
            elif svc.devices.index(device) != j:
                problems.append(f"{path}.devices[{j}]: {device!r} is listed twice")
        if svc.port in edge_manifest.HUB_PORTS:
            problems.append(f"{path}.port: {svc.port} is bound by edgeHub on every device "
                            f"({', '.join(map(str, edge_manifest.HUB_PORTS))})")
        for key in svc.env:
            if not edge_manifest.ENV_NAME.match(key):
                problems.append(f"{path}.env.{key}: not an environment variable name")
            elif key in RESERVED_ENV:
                problems.append(f"{path}.env.{key}: set by ml-deploy from the service's settings "
                                f"(port, workers, scoring_timeout_ms, auth_enabled, enable_app_insights)")
        for name, route in svc.routes.items():
            if not edge_manifest.TWIN_KEY.match(name):
                problems.append(f"{path}.routes.{name}: route names may not contain '.', '$', '#' or spaces")
            elif not route.strip():
                problems.append(f"{path}.routes.{name}: empty route")
        try:
            # The create options hold only config values, so their size is known now.
            module = scoring_module(svc.name, service_runtime(svc, svc.workers), svc.port, svc.env)
            edge_manifest.chunked(edge_manifest.create_options(module), f"{path}.env")
        except edge_manifest.ManifestError as err:
            problems.append(str(err))
    for hub_name, indexes in deployments.items():
        hub = hubs.get(hub_name)
        if hub is not None and len(indexes) > MAX_DEPLOYMENTS[hub.sku]:
            problems.append(f"services[{indexes[-1]}].target_condition: a {hub.sku} hub takes at most "
                            f"{MAX_DEPLOYMENTS[hub.sku]} deployments; {len(indexes)} services deploy to {hub_name!r}")
    return problems


def check(cfg: StackConfig) -> list[str]:
    return _hub_problems(cfg) + _service_problems(cfg)




def setup(ctx: DeployContext) -> dict[str, IotHub]:
    """Every hub in `iot_hubs`, whether or not a service uses it yet."""
    workspace = ctx.azure()
    return {
        h.name: IotHub(
            h.name,
            IotHubArgs(
                hub_name=azure_name(Kind.IOT_HUB, ctx.cfg.workspace.name, ctx.stack, h.name),
                resource_group_name=workspace.resource_group_name,
                sku=h.sku,
                capacity=h.capacity,
                location=h.location,
                protect=ctx.cfg.workspace.protect,
            ),
        )
        for h in ctx.cfg.section("iot_hubs", IotHubConfig)
    }


def deploy(ctx: DeployContext, svc: IotEdgeServiceConfig) -> Deployed:
    workspace = ctx.azure()
    hub: IotHub = ctx.shared["iot_edge"][svc.hub]
    path = f"services[{ctx.cfg.services.index(svc)}]"
    service = IotEdgeService(
        svc.name,
        IotEdgeServiceArgs(
            module_name=svc.name,
            hub_host_name=hub.host_name,
            hub_connection_string=hub.connection_string,
            image_ref=ctx.images[svc.image_name].image_ref,
            repository=svc.image_name,
            registry_id=workspace.registry_id,
            registry_name=workspace.registry_name,
            registry_login_server=workspace.registry_login_server,
            resource_group_name=workspace.resource_group_name,
            token_name=azure_name(Kind.REGISTRY_TOKEN, ctx.cfg.workspace.name, ctx.stack, svc.name),
            runtime=ctx.runtime(svc, svc.workers),
            host_port=svc.port,
            env=svc.env,
            routes=svc.routes,
            restart_policy=svc.restart_policy,
            store_and_forward_ttl_secs=svc.store_and_forward_ttl_secs,
            devices=list(svc.devices),
            target_condition=svc.target_condition,
            priority=svc.priority or 0,
            labels=svc.tags,
            registry_password_days=svc.registry_password_days,
            config_path=path,
        ),
    )
    logs = {"kind": "iot_edge", "hub": hub.hub_name, "module": svc.name, "devices": list(svc.devices),
            "target_condition": svc.target_condition or ""}
    return Deployed(service, logs, outputs={"hub": hub.hub_name, "devices": service.device_connection_strings})


# ---- what the offline plan's mocks answer --------------------------------------------------------

def _hash(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def _iot_hub(r: MockResource) -> None:
    properties = dict(r.state.get("properties") or {})
    properties["hostName"] = f"{r.name}.azure-devices.net"
    r.state["properties"] = properties


def _token(r: MockResource) -> None:
    r.state["creationDate"] = "2026-01-01T00:00:00Z"


def _token_password(r: MockResource) -> None:
    token = str(r.state.get("token_id") or r.name)
    r.state.update(username=token.rsplit("/", 1)[-1], password=_hash("token-password", token)[:44],
                   expiry="2027-01-01T00:00:00Z")


def _edge_device(r: MockResource) -> None:
    device = str(r.state.get("device_id"))
    key = _hash("device-key", device)[:44]
    r.state.update(status="enabled", iot_edge=True, etag=_hash("etag", device)[:12], generation_id="1",
                   connection_string=f"HostName={r.state.get('hub')};DeviceId={device};SharedAccessKey={key}")


def _device_deployment(r: MockResource) -> None:
    r.state["in_sync"] = True


def _hub_deployment(r: MockResource) -> None:
    r.state["etag"] = _hash("etag", str(r.state.get("configuration_id")))[:12]


def _hub_keys(args: dict[str, Any], _location: str) -> dict[str, Any]:
    hub = str(args.get("resourceName"))
    return {"keyName": args.get("keyName"), "rights": "RegistryRead, RegistryWrite, ServiceConnect",
            "primaryKey": _hash("hub-key", hub)[:44], "secondaryKey": _hash("hub-key-2", hub)[:44]}


def read_logs(source: Mapping[str, Any], options: LogOptions) -> str:
    """An IoT Edge module logs on each device, which this machine cannot reach: say where to look."""
    where = ", ".join(source.get("devices") or []) or f"the devices matching {source.get('target_condition')!r}"
    raise LogsUnavailable(f"module {source['module']} logs on its devices ({where}, hub {source['hub']}): run "
                          f"`sudo iotedge logs {source['module']} --tail {options.tail}` on a device")


def published_ports(options: Mapping[str, Any]) -> list[str]:
    """What a module's create options make reachable from outside the device: port bindings on an
    address other than loopback (Docker binds every address when `HostIp` is empty), every exposed
    port with `PublishAllPorts`, every port the process opens with the host's network."""
    host = options.get("HostConfig") or {}
    if str(host.get("NetworkMode") or "").lower() == "host":
        return ["every port (NetworkMode: host)"]
    if host.get("PublishAllPorts") is True:
        return ["every exposed port (PublishAllPorts)"]
    found = []
    for container_port, bindings in (host.get("PortBindings") or {}).items():
        # An empty binding list still publishes the port, on a port Docker picks.
        for binding in bindings or [{}]:
            if str(binding.get("HostIp") or "") not in LOOPBACK:
                found.append(f"{binding.get('HostPort') or 'any'}->{container_port}")
    return found


def public_endpoints(props: Mapping[str, Any]) -> Iterable[Exposure]:
    """A deployment's custom modules that publish a port on the device (see `published_ports`) must
    have the keys in their env; a manifest that cannot be read cannot be checked, which is a finding."""
    modules = edge_manifest.custom_modules(props)
    if modules is None:
        if "content" in props:
            return [Exposure("the deployment's content is not an IoT Edge manifest: its modules cannot be checked")]
        return []
    found = []
    for module in modules:
        if module.options is None:
            found.append(Exposure(f"module {module.name}: its createOptions are not a JSON object, so what it "
                                  "publishes cannot be checked"))
            continue
        ports = published_ports(module.options)
        env = {str(e).partition("=")[0]: str(e).partition("=")[2] for e in module.options.get("Env") or []}
        keys = module.env.get(runtime.AUTH_KEYS) or env.get(runtime.AUTH_KEYS)
        if ports and not keys:
            found.append(Exposure(f"module {module.name} publishes {', '.join(ports)} on the device without auth: "
                                  f"no {runtime.AUTH_KEYS} in its env (set auth_enabled: true on the service)"))
    return found


IOT_HUB = "azure-native:iothub:IotHubResource"
DEVICE_DEPLOYMENT = "pulumi-python:dynamic/iot_edge:DeviceDeployment"
HUB_DEPLOYMENT = "pulumi-python:dynamic/iot_edge:HubDeployment"


TARGET = register(Target(
    name="iot_edge",
    config=IotEdgeServiceConfig,
    deploy=deploy,
    sections={"iot_hubs": IotHubConfig},
    check=check,
    setup=setup,
    mock_resources={
        IOT_HUB: _iot_hub,
        "azure-native:containerregistry:Token": _token,
        "pulumi-python:dynamic/containerregistry:TokenPassword": _token_password,
        "pulumi-python:dynamic/iot_edge:EdgeDevice": _edge_device,
        DEVICE_DEPLOYMENT: _device_deployment,
        HUB_DEPLOYMENT: _hub_deployment,
    },
    mock_calls={"azure-native:iothub:listIotHubResourceKeysForKeyName": _hub_keys},
    logs={"iot_edge": read_logs},
    public_endpoints={DEVICE_DEPLOYMENT: public_endpoints, HUB_DEPLOYMENT: public_endpoints},
    replace_rules=ReplaceRules(spec_read={
        IOT_HUB: SpecRead(
            "2023-06-30", (),
            # specification/iothub/.../stable/2023-06-30/iothub.json, definitions.IotHubDescription.
            "IotHubDescription is allOf the file's own Resource, whose location has no x-ms-mutability; "
            "its top-level properties (etag, properties, sku, identity) carry none either"),
    }),
))
