"""`target: online_endpoint`: an Azure ML managed online endpoint (Azure ML v2's way to serve a
model), with one managed deployment per entry of `deployments` and a traffic split between them.

Azure ML SDK v1, whose web services the `aci` and `aks` targets mirror, "is deprecated as of March
31, 2025. Support for it ends on June 30, 2026", and "using SDK/CLI v1 to deploy models on ACI or
AKS as web services is now deprecated" (learn.microsoft.com/azure/machine-learning/
migrate-to-v2-deploy-endpoints). Our `aci` and `aks` targets deploy containers themselves and keep
working; this target is for teams on Azure ML's endpoints.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal, Mapping

from pydantic import Field, field_validator

from components.naming import Kind, azure_name, stable_hash
from components.online_endpoint import (EnvironmentArgs, OnlineDeploymentArgs, OnlineEndpoint, OnlineEndpointArgs,
                                       ProbeSettings, scoring_environment)
from components.service import azure_tags
from infra.deploy import DeployContext, Deployed, LogOptions, LogsUnavailable, MockResource, environment_version
from infra.schema import DeploymentBase, SplitService, StackConfig, Strict
from infra import batch_endpoint
from infra.targets import ReplaceRules, SpecRead, Target, register
from policy.endpoints import Exposure
from serving import settings as runtime

ONLINE_ENDPOINT = "azure-native:machinelearningservices:OnlineEndpoint"
ONLINE_DEPLOYMENT = "azure-native:machinelearningservices:OnlineDeployment"
ENVIRONMENT_VERSION = "azure-native:machinelearningservices:EnvironmentVersion"

AUTH_MODES = {"key": "Key", "aml_token": "AMLToken", "aad_token": "AADToken"}
"""The config's names -> azure-native's EndpointAuthMode values (Key, AMLToken, AADToken)."""

# The VM sizes managed online endpoints accept, with their cores (learn.microsoft.com/azure/
# machine-learning/reference-managed-online-endpoints-vm-sku-list, "Managed online endpoints SKU list").
MANAGED_SKUS: dict[str, int] = {
    **{f"STANDARD_D{n}AS_V4": n for n in (2, 4, 8, 16, 32, 48, 64, 96)},
    **{f"STANDARD_D{n}A_V4": n for n in (2, 4, 8, 16, 32, 48, 64, 96)},
    "STANDARD_DS1_V2": 1, "STANDARD_DS2_V2": 2, "STANDARD_DS3_V2": 4, "STANDARD_DS4_V2": 8, "STANDARD_DS5_V2": 16,
    **{f"STANDARD_E{n}S_V3": n for n in (2, 4, 8, 16, 32, 48, 64)},
    **{f"STANDARD_F{n}S_V2": n for n in (2, 4, 8, 16, 32, 48, 64, 72)},
    **{f"STANDARD_FX{n}MDS": n for n in (4, 12, 24, 36, 48)},
    **{f"STANDARD_L{n}AS_V3": n for n in (8, 16, 32, 48, 64, 80)},
    **{f"STANDARD_L{n}S_V2": n for n in (8, 16, 32, 48, 64, 80)},
    **{f"STANDARD_L{n}S_V3": n for n in (8, 16, 32, 48, 64, 80)},
    "STANDARD_NC24ADS_A100_V4": 24, "STANDARD_NC48ADS_A100_V4": 48, "STANDARD_NC96ADS_A100_V4": 96,
    "STANDARD_NC4AS_T4_V3": 4, "STANDARD_NC8AS_T4_V3": 8, "STANDARD_NC16AS_T4_V3": 16, "STANDARD_NC64AS_T4_V3": 64,
    "STANDARD_NC6S_V2": 6, "STANDARD_NC12S_V2": 12, "STANDARD_NC24S_V2": 24,
    "STANDARD_NC6S_V3": 6, "STANDARD_NC12S_V3": 12, "STANDARD_NC24S_V3": 24,
    "STANDARD_NC40ADS_H100_V5": 40, "STANDARD_NC80ADIS_H100_V5": 80,
    "STANDARD_ND96AMSR_A100_V4": 96, "STANDARD_ND96ASR_V4": 96, "STANDARD_ND40RS_V2": 40,
    "STANDARD_ND96IS_H100_V5": 96, "STANDARD_ND96ISR_H100_V5": 96,
    "STANDARD_NV6ADS_A10_V5": 6, "STANDARD_NV12ADS_A10_V5": 12, "STANDARD_NV18ADS_A10_V5": 18,
    "STANDARD_NV36ADS_A10_V5": 36, "STANDARD_NV36ADMS_A10_V5": 36, "STANDARD_NV72ADS_A10_V5": 72,
}
# A request's timeout on a managed deployment: "the maximum value allowed is 180000" ms
# (learn.microsoft.com/azure/machine-learning/reference-yaml-deployment-managed-online#requestsettings).
MAX_REQUEST_TIMEOUT_MS = 180_000


class ProbeConfig(Strict):
    """A deployment's liveness or readiness probe; unset fields keep Azure ML's defaults."""

    initial_delay: int = Field(default=ProbeSettings.initial_delay_s, ge=0)
    period: int = Field(default=ProbeSettings.period_s, ge=1)
    timeout: int = Field(default=ProbeSettings.timeout_s, ge=1)
    failure_threshold: int = Field(default=ProbeSettings.failure_threshold, ge=1)

    def settings(self) -> ProbeSettings:
        return ProbeSettings(self.initial_delay, self.period, self.timeout, self.failure_threshold)


class OnlineDeploymentConfig(DeploymentBase):
    """A managed online deployment: the image on `instance_count` VMs of `instance_type`."""

    # azure-native's ManagedOnlineDeployment.instance_type: "Compute instance type. Default: Standard_F4s_v2".
    instance_type: str = "Standard_F4s_v2"
    instance_count: int = Field(default=1, ge=1)
    # Azure ML's default (reference-yaml-deployment-managed-online#requestsettings): 1.
    # le=1000: a bound of ml-deploy's own against typos, not one of Azure's.
    max_concurrent_requests_per_instance: int = Field(default=1, ge=1, le=1000)
    liveness_probe: ProbeConfig = Field(default_factory=ProbeConfig)
    readiness_probe: ProbeConfig = Field(default_factory=ProbeConfig)

    @field_validator("instance_type")
    @classmethod
    def _managed_sku(cls, value: str) -> str:
        if value.upper() not in MANAGED_SKUS:
            raise ValueError(f"{value!r} is not a VM size managed online endpoints accept (e.g. Standard_DS3_v2, "
                             "Standard_F4s_v2, Standard_E4s_v3; see Azure ML's managed online endpoints SKU list)")
        return value

    @property
    def cores(self) -> int:
        return MANAGED_SKUS[self.instance_type.upper()]


class OnlineEndpointConfig(SplitService[OnlineDeploymentConfig]):
    """A managed online endpoint (`target: online_endpoint`): deployments and their split."""

    target: Literal["online_endpoint"]
    auth_mode: Literal["key", "aml_token", "aad_token"] = "key"
    """How callers authenticate: the endpoint's keys, or Azure ML / Entra tokens. Always on."""
    public_network_access: Literal["enabled", "disabled"] = "enabled"


def check(cfg: StackConfig) -> list[str]:
    problems: list[str] = batch_endpoint.check(cfg)
    for i, svc in cfg.services_of(OnlineEndpointConfig):
        path = f"services[{i}]"
        if not svc.deployments and svc.image is not None:
            problems.append(f"{path}.image: an online endpoint runs deployments: list them under deployments "
                            "(name, image, instance_type, instance_count, traffic)")
        if "auth_enabled" in svc.model_fields_set:
            problems.append(f"{path}.auth_enabled: an online endpoint always authenticates; choose how with "
                            "auth_mode (key, aml_token or aad_token)")
        if svc.scoring_timeout_ms > MAX_REQUEST_TIMEOUT_MS:
            problems.append(f"{path}.scoring_timeout_ms: {svc.scoring_timeout_ms} is over the {MAX_REQUEST_TIMEOUT_MS} ms "
                            "a managed online deployment allows a request")
    return problems


def setup(ctx: DeployContext) -> dict[str, Any]:
    """One environment version per image the stack's online endpoints deploy, by image name: Azure
    names it after the image, so endpoints that run the same image share one."""
    environments: dict[str, Any] = {}
    workspace = ctx.azure()
    for _, svc in ctx.cfg.services_of(OnlineEndpointConfig):
        for d in svc.deployments or ():
            if d.image in environments:
                continue
            image = ctx.container_images[d.image]
            environments[d.image] = scoring_environment(EnvironmentArgs(
                image=d.image, image_ref=image.image_ref, image_tag=environment_version(image),
                resource_group_name=workspace.resource_group_name, workspace_name=workspace.workspace_name,
                # Until environments were the stack's, the first endpoint's own, with its tags.
                tags=azure_tags(svc.description, svc.tags), first_endpoint=svc.name,
            ))
    return environments


def deploy(ctx: DeployContext, svc: OnlineEndpointConfig) -> Deployed:
    workspace = ctx.azure()
    registry = ctx.registry()
    assert svc.deployments, "validated: an online endpoint has deployments"
    environments = ctx.shared[TARGET.name]
    deployments = []
    for d in svc.deployments:
        deployments.append(OnlineDeploymentArgs(
            name=d.name, environment_id=environments[d.image].id,
            instance_type=d.instance_type, instance_count=d.instance_count,
            workers=runtime.workers_for_cores(d.cores), timeout_ms=svc.scoring_timeout_ms,
            max_concurrent_requests_per_instance=d.max_concurrent_requests_per_instance,
            liveness=d.liveness_probe.settings(), readiness=d.readiness_probe.settings(),
            app_insights=svc.enable_app_insights,
        ))
    own_registry = ctx.pull_registry is None
    endpoint = OnlineEndpoint(svc.name, OnlineEndpointArgs(
        endpoint_name=azure_name(Kind.ONLINE_ENDPOINT, svc.name, ctx.cfg.workspace.name, ctx.stack),
        resource_group_name=workspace.resource_group_name,
        workspace_name=workspace.workspace_name,
        auth_mode=AUTH_MODES[svc.auth_mode],
        deployments=deployments,
        traffic={d.name: d.traffic for d in svc.deployments},
        mirror=dict(svc.mirror_traffic),
        registry_id=None if own_registry else registry.id,
        subscription_id=None if own_registry else registry.subscription_id,
        public_network_access="Enabled" if svc.public_network_access == "enabled" else "Disabled",
        description=svc.description,
        tags=svc.tags,
        protect=ctx.cfg.workspace.protect,
    ))
    return Deployed(endpoint, {"kind": "online_endpoint", "deployments": endpoint.deployment_ids})


def read_logs(source: Mapping[str, Any], options: LogOptions) -> str:
    """A deployment's inference-server log through Azure ML's getLogs action (`POST .../deployments/
    {name}/getLogs` with `containerType` and `tail`), with the caller's Azure credentials; every
    deployment's, each under its name, unless one is chosen."""
    from providers.arm import ARM_ENDPOINT, Arm, ArmError
    from providers.endpoint_traffic import API_VERSION

    deployments: Mapping[str, str] = source["deployments"]
    names = [options.deployment] if options.deployment is not None else list(deployments)
    unknown = [n for n in names if n not in deployments]
    if unknown:
        raise LogsUnavailable(f"no deployment {unknown[0]!r}; the endpoint has: {', '.join(deployments)}")
    arm = Arm(source.get("arm_endpoint") or ARM_ENDPOINT, API_VERSION)
    parts = []
    for name in names:
        response = arm.call("POST", f"{deployments[name]}/getLogs", {"containerType": "InferenceServer",
                                                                     "tail": options.tail})
        if response.status_code != 200:
            raise LogsUnavailable(str(ArmError(response)))
        content = str(response.json().get("content") or "")
        parts.append(content if len(names) == 1 else f"==> {name} <==\n{content}")
    return "\n".join(parts)


def public_endpoints(props: Mapping[str, Any]) -> Iterable[Exposure]:
    """A managed online endpoint with public network access answers on the internet, always over HTTPS
    (`https://<name>.<region>.inference.ml.azure.com`) and always with an auth mode (keys, Azure ML
    tokens or Entra tokens); a mode other than those would be one that checks nothing."""
    props = props.get("properties") or {}
    if str(props.get("publicNetworkAccess") or "Enabled").lower() == "disabled":
        return []
    mode = props.get("authMode")
    return [Exposure(None if mode in AUTH_MODES.values() else f"online endpoint with auth mode {mode!r}")]


# ---- what the offline plan's mocks answer --------------------------------------------------------

def _endpoint(r: MockResource) -> None:
    name = r.state.get("endpointName") or r.name
    location = r.state.get("location") or r.location
    props = dict(r.state.get("properties") or {})
    props["scoringUri"] = f"https://{name}.{location}.inference.ml.azure.com/score"
    props["swaggerUri"] = f"https://{name}.{location}.inference.ml.azure.com/swagger.json"
    r.state["properties"] = props
    r.state["identity"] = {**(r.state.get("identity") or {}), "principalId": f"00000000-0000-0000-0000-{stable_hash(name, 12)}"}


def _keys(args: dict[str, Any], _location: str) -> dict[str, Any]:
    endpoint = str(args.get("endpointName"))
    return {"primaryKey": f"mock-primary-{endpoint}", "secondaryKey": f"mock-secondary-{endpoint}"}


TARGET = register(Target(
    name="online_endpoint",
    config=OnlineEndpointConfig,
    deploy=deploy,
    check=check,
    setup=setup,
    mock_resources={ONLINE_ENDPOINT: _endpoint, batch_endpoint.BATCH_ENDPOINT: batch_endpoint.mock_endpoint},
    mock_calls={"azure-native:machinelearningservices:listOnlineEndpointKeys": _keys},
    logs={"online_endpoint": read_logs},
    public_endpoints={ONLINE_ENDPOINT: public_endpoints},
    batch=batch_endpoint.batch,
    batch_name=batch_endpoint.NAME,
    replace_rules=ReplaceRules(
        spec_read={
            # specification/machinelearningservices/.../stable/2025-12-01/mfe.json: both are allOf
            # common-types v3 TrackedResource, whose location is x-ms-mutability [read, create].
            ONLINE_ENDPOINT: SpecRead("2025-12-01", ("location",),
                                      "OnlineEndpointTrackedResource: v3 TrackedResource (location [read, create]); "
                                      "identity, kind, properties and sku carry no x-ms-mutability"),
            ONLINE_DEPLOYMENT: SpecRead("2025-12-01", ("location",),
                                        "OnlineDeploymentTrackedResource: v3 TrackedResource (location [read, "
                                        "create]); identity, kind, properties and sku carry no x-ms-mutability"),
        },
        refused_in_place={
            # The same mfe.json, EnvironmentVersion: image and inferenceConfig are x-ms-mutability
            # [create, read]. ml-deploy never asks it: a new image is a new version (the content tag).
            ENVIRONMENT_VERSION: {
                "properties.image": "an environment version's image is create-only (mfe.json 2025-12-01, "
                                    "EnvironmentVersion.image x-ms-mutability [create, read])",
                "properties.inferenceConfig": "an environment version's inferenceConfig is create-only (mfe.json "
                                              "2025-12-01, x-ms-mutability [create, read])",
            },
        },
    ),
))

