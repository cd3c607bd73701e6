"""The stack config: read once from `Pulumi.<stack>.yaml`, validated into typed objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import pulumi
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

PROJECT = "ml-deploy"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""Relative paths in the stack config are relative to this folder (the one holding Pulumi.yaml)."""

# The config keys this program reads, in the order of the Azure ML workflow.
KEYS = ("workspace", "models", "images", "aks_clusters", "services")

DEFAULT_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"

# Azure ML's own naming rules for the assets users name in the config.
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$"
IMAGE_NAME = r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$"
SERVICE_NAME = r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$"
WORKSPACE_NAME = r"^[a-z][a-z0-9-]{1,14}[a-z0-9]$"


class ConfigError(pulumi.RunError):
    """The stack config is invalid. The message lists every problem with its config path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack config:\n" + "\n".join(f"  {p}" for p in problems))


class _Strict(BaseModel):
    # Unknown keys are typos far more often than intent: reject them.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _existing_path(value: str, info: ValidationInfo, kind: str) -> Path:
    root: Path = (info.context or {}).get("root", PROJECT_ROOT)
    path = Path(value).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.exists():
        raise ValueError(f"{kind} {value!r} does not exist (looked at {path})")
    return path


class WorkspaceConfig(_Strict):
    """`ml-deploy:workspace`: the Azure ML workspace and the resources it is tied to."""

    name: str = Field(pattern=WORKSPACE_NAME)
    """Base of every physical name: 3-16 lowercase letters, digits and hyphens."""
    kind: Literal["azure", "local"] = "azure"
    """`azure`: an Azure ML workspace. `local`: a folder on this machine, for `target: local` services."""
    path: str = ".ml-deploy/local"
    """With `kind: local`: the workspace folder (model registry, image store, service logs)."""
    protect: bool = True
    """Protect stateful resources (storage, Key Vault, registry, workspace) from deletion."""
    sku: Literal["Basic"] = "Basic"


class ModelConfig(_Strict):
    """One entry of `ml-deploy:models`: a file or folder registered as an Azure ML model."""

    name: str = Field(pattern=MODEL_NAME)
    path: Path
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("path", mode="before")
    @classmethod
    def _path_exists(cls, value: Any, info: ValidationInfo) -> Path:
        return _existing_path(str(value), info, "model path")


class ImageConfig(_Strict):
    """One entry of `ml-deploy:images`: a scoring image built from a script, a conda env and models."""

    name: str = Field(pattern=IMAGE_NAME, max_length=64)
    models: list[str] = Field(min_length=1)
    execution_script: Path
    conda_file: Path
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    base_image: str = DEFAULT_BASE_IMAGE

    @field_validator("execution_script", mode="before")
    @classmethod
    def _script_exists(cls, value: Any, info: ValidationInfo) -> Path:
        path = _existing_path(str(value), info, "execution script")
        if path.suffix != ".py" or not path.is_file():
            raise ValueError(f"execution script {value!r} must be a .py file")
        return path

    @field_validator("conda_file", mode="before")
    @classmethod
    def _conda_exists(cls, value: Any, info: ValidationInfo) -> Path:
        path = _existing_path(str(value), info, "conda file")
        if path.suffix not in (".yml", ".yaml") or not path.is_file():
            raise ValueError(f"conda file {value!r} must be a .yml or .yaml file")
        return path


# vCPUs per VM size, for the FastProd rule. Sizes outside this table are an error, never a guess.
VM_VCPUS: dict[str, int] = {
    **{f"Standard_D{n}_v2": c for n, c in ((1, 1), (2, 2), (3, 4), (4, 8), (5, 16))},
    **{f"Standard_DS{n}_v2": c for n, c in ((1, 1), (2, 2), (3, 4), (4, 8), (5, 16))},
    **{f"Standard_D{n}_v2": c for n, c in ((11, 2), (12, 4), (13, 8), (14, 16))},
    **{f"Standard_D{c}{s}_v{v}": c for c in (2, 4, 8, 16, 32, 48, 64) for s in ("", "s", "ds", "as") for v in (3, 4, 5)},
    **{f"Standard_E{c}{s}_v{v}": c for c in (2, 4, 8, 16, 32) for s in ("", "s", "ds", "as") for v in (3, 4, 5)},
    **{f"Standard_F{c}s_v2": c for c in (2, 4, 8, 16, 32, 48, 64, 72)},
    **{f"Standard_B{c}{m}": c for c in (2, 4, 8, 12, 16, 20) for m in ("s", "ms")},
    "Standard_NC6": 6, "Standard_NC12": 12, "Standard_NC24": 24,
    "Standard_NC6s_v3": 6, "Standard_NC12s_v3": 12, "Standard_NC24s_v3": 24,
    "Standard_NC4as_T4_v3": 4, "Standard_NC8as_T4_v3": 8, "Standard_NC16as_T4_v3": 16, "Standard_NC64as_T4_v3": 64,
}
FASTPROD_MIN_VCPUS = 12


class AttachConfig(_Strict):
    """An existing AKS cluster to deploy to instead of creating one."""

    resource_group: str = Field(min_length=1, max_length=90)
    cluster_name: str = Field(min_length=1, max_length=63)


class AksClusterConfig(_Strict):
    """One entry of `ml-deploy:aks_clusters`: a cluster created for the stack, or an attached one."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,14}[a-z0-9]$")
    agent_count: int = Field(default=3, ge=1, le=100)
    vm_size: str = "Standard_D3_v2"
    cluster_purpose: Literal["FastProd", "DevTest"] = "FastProd"
    attach: Optional[AttachConfig] = None


class _ServiceBase(_Strict):
    name: str = Field(pattern=SERVICE_NAME)
    """Azure ML web service name: 3-32 lowercase letters, digits and hyphens, starting with a letter."""
    image: str
    auth_enabled: bool = False
    enable_app_insights: bool = False
    scoring_timeout_ms: int = Field(default=60_000, gt=0, le=300_000)


class AciServiceConfig(_ServiceBase):
    """A service on Azure Container Instances (`target: aci`), with the Azure ML SDK's defaults."""

    target: Literal["aci"]
    # ACI caps one container at 4 cores and 16 GB in most regions.
    cpu_cores: float = Field(default=0.1, gt=0, le=4)
    memory_gb: float = Field(default=0.5, gt=0, le=16)
    dns_name_label: Optional[str] = Field(default=None, pattern=r"^[a-z][a-z0-9-]{1,61}[a-z0-9]$")
    location: Optional[str] = None
    """Region of the container group; the workspace's region when unset."""


class LocalServiceConfig(_ServiceBase):
    """A service on this machine (`target: local`): the scoring runtime as a process on 127.0.0.1."""

    target: Literal["local"]
    port: int = Field(default=0, ge=0, le=65535)
    """0 picks a free port when the service is created and keeps it."""
    workers: int = Field(default=1, ge=1, le=64)


class AksServiceConfig(_ServiceBase):
    """A service on Azure Kubernetes Service (`target: aks`), with the Azure ML SDK's defaults."""

    target: Literal["aks"]
    cluster: str
    auth_enabled: bool = True
    cpu_cores: float = Field(default=0.1, gt=0)
    memory_gb: float = Field(default=0.5, gt=0)
    gpu_cores: int = Field(default=0, ge=0)
    autoscale_enabled: Optional[bool] = None
    """Default: on unless `num_replicas` is set."""
    autoscale_min_replicas: int = Field(default=1, ge=1)
    autoscale_max_replicas: int = Field(default=10, ge=1)
    autoscale_target_utilization: int = Field(default=70, ge=1, le=100)
    num_replicas: Optional[int] = Field(default=None, ge=1)
    collect_model_data: bool = False
    replica_max_concurrent_requests: int = Field(default=1, ge=1)
    max_request_wait_time: int = Field(default=500, ge=0)
    """Milliseconds a request may wait in the queue (an Azure ML router setting; kept for parity)."""
    period_seconds: int = Field(default=10, ge=1)
    initial_delay_seconds: int = Field(default=310, ge=0)
    timeout_seconds: int = Field(default=2, ge=1)
    success_threshold: int = Field(default=1, ge=1)
    failure_threshold: int = Field(default=3, ge=1)
    namespace: str = Field(default="ml-deploy", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    primary_key: Optional[str] = Field(default=None, min_length=16)
    """Secret; generated when absent. Set it with `pulumi config set --secret` in a real stack."""
    secondary_key: Optional[str] = Field(default=None, min_length=16)

    @property
    def autoscale(self) -> bool:
        return self.autoscale_enabled if self.autoscale_enabled is not None else self.num_replicas is None


ServiceConfig = Annotated[
    Union[AciServiceConfig, LocalServiceConfig, AksServiceConfig], Field(discriminator="target")
]
TARGETS = ("aci", "local", "aks")
LOCAL_TARGETS = ("local",)


class StackConfig(_Strict):
    """Everything one stack declares."""

    workspace: WorkspaceConfig
    models: list[ModelConfig] = Field(default_factory=list)
    images: list[ImageConfig] = Field(default_factory=list)
    aks_clusters: list[AksClusterConfig] = Field(default_factory=list)
    services: list[ServiceConfig] = Field(default_factory=list)

    def model(self, name: str) -> ModelConfig:
        return next(m for m in self.models if m.name == name)

    def image(self, name: str) -> ImageConfig:
        return next(i for i in self.images if i.name == name)


def _format_loc(loc: tuple[Any, ...]) -> str:
    path = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            path += f"[{part}]"
        elif i > 0 and isinstance(loc[i - 1], int) and part in TARGETS:
            continue  # the discriminated union's tag: not a key the user wrote
        else:
            path += f".{part}" if path else str(part)
    return path


def _cross_reference_problems(cfg: StackConfig) -> list[str]:
    problems: list[str] = []
    for key, items in (("models", cfg.models), ("images", cfg.images), ("aks_clusters", cfg.aks_clusters),
                       ("services", cfg.services)):
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            if item.name in seen:
                problems.append(f"{key}[{i}].name: {item.name!r} is already used by {key}[{seen[item.name]}]")
            seen.setdefault(item.name, i)
    model_names = {m.name for m in cfg.models}
    for i, image in enumerate(cfg.images):
        for j, model in enumerate(image.models):
            if model not in model_names:
                problems.append(f"images[{i}].models[{j}]: no model named {model!r} in models")
        if len(set(image.models)) != len(image.models):
            problems.append(f"images[{i}].models: lists a model twice")
    problems += _cluster_problems(cfg)
    image_names = {im.name for im in cfg.images}
    cluster_names = {c.name for c in cfg.aks_clusters}
    local = cfg.workspace.kind == "local"
    for i, service in enumerate(cfg.services):
        if service.image not in image_names:
            problems.append(f"services[{i}].image: no image named {service.image!r} in images")
        if (service.target in LOCAL_TARGETS) != local:
            problems.append(f"services[{i}].target: {service.target!r} needs a workspace of kind "
                            f"{'local' if service.target in LOCAL_TARGETS else 'azure'} "
                            f"(workspace.kind is {cfg.workspace.kind!r})")
        if isinstance(service, AksServiceConfig):
            problems += _aks_service_problems(i, service, cluster_names)
    return problems


def _cluster_problems(cfg: StackConfig) -> list[str]:
    problems: list[str] = []
    if cfg.aks_clusters and cfg.workspace.kind == "local":
        problems.append("aks_clusters: AKS clusters need a workspace of kind azure")
    for i, cluster in enumerate(cfg.aks_clusters):
        path = f"aks_clusters[{i}]"
        if cluster.attach is not None:
            given = cluster.model_fields_set & {"agent_count", "vm_size", "cluster_purpose"}
            for key in sorted(given):
                problems.append(f"{path}.{key}: not allowed with attach (the attached cluster keeps its own)")
            continue
        vcpus = VM_VCPUS.get(cluster.vm_size)
        if vcpus is None:
            problems.append(f"{path}.vm_size: unknown VM size {cluster.vm_size!r}; use one of the sizes in "
                            f"infra/config.py VM_VCPUS (e.g. Standard_D3_v2), or add it there with its vCPU count")
        elif cluster.cluster_purpose == "FastProd" and vcpus * cluster.agent_count < FASTPROD_MIN_VCPUS:
            problems.append(
                f"{path}.agent_count: a FastProd cluster needs at least {FASTPROD_MIN_VCPUS} vCPUs; "
                f"{cluster.agent_count} x {cluster.vm_size} ({vcpus} vCPUs) has {vcpus * cluster.agent_count}: "
                f"use agent_count >= {-(-FASTPROD_MIN_VCPUS // vcpus)} or cluster_purpose: DevTest"
            )
    return problems


def _aks_service_problems(i: int, svc: AksServiceConfig, clusters: set[str]) -> list[str]:
    path = f"services[{i}]"
    problems: list[str] = []
    if svc.cluster not in clusters:
        problems.append(f"{path}.cluster: no cluster named {svc.cluster!r} in aks_clusters")
    if svc.autoscale_enabled and svc.num_replicas is not None:
        problems.append(f"{path}.num_replicas: not allowed with autoscale_enabled: true (set one or the other)")
    if svc.autoscale_min_replicas > svc.autoscale_max_replicas:
        problems.append(f"{path}.autoscale_min_replicas: must not exceed autoscale_max_replicas "
                        f"({svc.autoscale_min_replicas} > {svc.autoscale_max_replicas})")
    if svc.primary_key is not None and svc.primary_key == svc.secondary_key:
        problems.append(f"{path}.secondary_key: must differ from primary_key")
    return problems


def parse(raw: dict[str, Any], root: Path = PROJECT_ROOT) -> StackConfig:
    """Validate the `ml-deploy:` config values (key without namespace -> value) into a StackConfig.

    Raises ConfigError naming every invalid path; nothing is registered before this returns.
    """
    unknown = sorted(set(raw) - set(KEYS))
    problems = [f"{k}: unknown key (expected one of: {', '.join(KEYS)})" for k in unknown]
    if "workspace" not in raw:
        problems.append("workspace: required (at least `name`)")
    if problems:
        raise ConfigError(problems)
    try:
        cfg = StackConfig.model_validate(raw, context={"root": root})
    except ValidationError as err:
        raise ConfigError([f"{_format_loc(e['loc'])}: {_message(e)}" for e in err.errors()]) from None
    problems = _cross_reference_problems(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def _message(error: Any) -> str:
    msg = str(error["msg"])
    # pydantic prefixes validator errors with "Value error, "; the path already says where.
    return msg.removeprefix("Value error, ")


def load() -> StackConfig:
    """Read this stack's `ml-deploy:` config from the Pulumi engine (or its mocks) and validate it."""
    raw: dict[str, Any] = {}
    # The SDK exposes no listing of config keys; the runtime's config map is where the engine puts
    # them, and listing it is how a misspelt top-level key becomes an error instead of a silent no-op.
    for full_key, value in pulumi.runtime.config.CONFIG.get().items():
        namespace, _, key = full_key.partition(":")
        if namespace == PROJECT:
            raw[key] = _decode(value)
    return parse(raw)


def _decode(value: Any) -> Any:
    # Object values arrive as JSON text from the engine; plain strings stay strings.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
