"""The stack config's schema: the typed models a validated `Pulumi.<stack>.yaml` becomes, and the
naming rules they enforce. Pure: it knows no target (each target subclasses `ServiceBase` in its own
module); reading and cross-checking the config against the target registry is infra/config.py."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, Mapping, Optional, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from content import environment
from content.bundle import EnvironmentFile

if TYPE_CHECKING:
    from components.service import TlsCertificate

PROJECT = "ml-deploy"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""Relative paths in the stack config are relative to this folder (the one holding Pulumi.yaml)."""

DEFAULT_BASE_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"

# Azure ML's own naming rules for the assets users name in the config.
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$"
IMAGE_NAME = r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$"
SERVICE_NAME = r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$"
WORKSPACE_NAME = r"^[a-z][a-z0-9-]{1,14}[a-z0-9]$"
# Pulumi's rule for stack names (pulumi/pulumi pkg/backend: stackNameAndProjectRegexp).
STACK_NAME = r"^[A-Za-z0-9_.-]{1,100}$"
# An image pinned by digest: `<repository>[:<tag>]@sha256:<64 hex>`; registries (and the local
# image store, whose repositories are `local/<image>`) answer a digest with exactly those bytes.
DIGEST_REF = re.compile(r"^(?P<repository>[a-z0-9][a-z0-9._/:-]*?)(?::[\w][\w.-]{0,127})?@sha256:(?P<digest>[0-9a-f]{64})$")
MODEL_VERSION = r"^[0-9a-f]{12}$"
PROMOTE_COMMAND = "./ml-deploy promote --from {source} --to {stack}"


class Strict(BaseModel):
    # Unknown keys are typos far more often than intent: reject them.
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _existing_path(value: str, info: ValidationInfo, kind: str) -> Path:
    root: Path = (info.context or {}).get("root", PROJECT_ROOT)
    path = Path(value).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.exists():
        raise ValueError(f"{kind} {value!r} does not exist (looked at {path})")
    return path


OFFLINE_PLAN = "ML_DEPLOY_OFFLINE_PLAN"
"""Set by `./ml-deploy plan` and `diff` for the program they run under Pulumi's mocks."""


def offline() -> bool:
    """Whether this run is an offline plan (`./ml-deploy plan`/`diff`: the program under Pulumi's
    mocks, nothing contacted): machine-local files that only the deployment itself opens (a
    kubeconfig) may be missing there and get a stand-in. `pulumi preview`/`up`, and the tests that
    run the program under the mocks as the engine would, still require them."""
    from pulumi.runtime import settings
    from pulumi.runtime.mocks import MockMonitor

    return os.environ.get(OFFLINE_PLAN) == "1" and isinstance(getattr(settings.SETTINGS, "monitor", None), MockMonitor)


_DEFAULTED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}")


def expand(value: str) -> str:
    """`~`, `$VAR`/`${VAR}` and `${VAR:-default}` (the shell's: the default when VAR is unset or
    empty) expanded; a variable without a default that is not set is an error naming it."""
    defaulted = _DEFAULTED.sub(lambda m: os.environ.get(m.group(1)) or m.group(2), value)
    expanded = os.path.expandvars(os.path.expanduser(defaulted))
    unset = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", expanded)
    if unset:
        raise ValueError(f"{value!r}: ${unset[0]} is not set in the environment")
    return expanded


# A registry address as Docker names it: host[:port], without a scheme or a path.
REGISTRY_ADDRESS = r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$"


class WorkspaceConfig(Strict):
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
    registry: Optional[str] = Field(default=None, pattern=REGISTRY_ADDRESS)
    """With `kind: local`: a registry (`host[:port]`) that images are also built for and pushed to,
    for services that run containers (`target: container`, `target: kubernetes`)."""
    docker_host: Optional[str] = None
    """The Docker engine that builds images and runs containers (`unix:///...`, `tcp://...`); `$VARS`
    are expanded when the program runs. Unset: `$DOCKER_HOST` or Docker's default socket."""
    build_network: Literal["default", "host"] = "default"
    """The network of `RUN` steps in image builds; `host` for an engine without a bridge (the lab's)."""
    builder: Optional[str] = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """A buildx builder (by name) for image builds; unset: docker-build finds or creates one."""

    @field_validator("docker_host")
    @classmethod
    def _docker_host(cls, value: Optional[str]) -> Optional[str]:
        return expand(value) if value is not None else None


class ModelConfig(Strict):
    """One entry of `ml-deploy:models`: a file or folder registered as an Azure ML model."""

    name: str = Field(pattern=MODEL_NAME)
    path: Path
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("path", mode="before")
    @classmethod
    def _path_exists(cls, value: Any, info: ValidationInfo) -> Path:
        return _existing_path(str(value), info, "model path")


class ImageBase(Strict):
    """One entry of `ml-deploy:images`: an image and the models it carries. On a promoted stack
    (`promote_from`) this is all an entry says: the image itself comes from the source stack."""

    name: str = Field(pattern=IMAGE_NAME, max_length=64)
    models: list[str] = Field(min_length=1)
    description: str = ""
    tags: dict[str, str] = Field(default_factory=dict)


ENTRY_POINTS = ("init", "run")
"""What Azure ML calls in a scoring script: `init()` once per process, `run(data)` per request."""


def script_problem(path: Path) -> Optional[str]:
    """Why `path` cannot be a scoring script (it does not compile, or binds no `init`/`run` at its
    top level), naming the file and line; None when it can. Nothing of it is run."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as err:
        where = f"{path}, line {err.lineno}" + (f", column {err.offset}" if err.offset else "")
        return f"execution script {where}: {err.msg} (it would fail the image's first start)"
    except ValueError as err:  # null bytes
        return f"execution script {path}: {err}"
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.If, ast.Try)):
            # Definitions under `if`/`try` at the top level (optional imports): accepted as bound.
            bound.update(n.name for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
            bound.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
            bound.update((a.asname or a.name).split(".")[0] for n in ast.walk(node)
                         if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names)
    missing = [name for name in ENTRY_POINTS if name not in bound]
    if missing:
        return (f"execution script {path}: defines no {' and no '.join(f'{m}()' for m in missing)} at its top level "
                "(Azure ML calls init() once, then run(data) for each request)")
    return None


BUILD_KEYS = ("execution_script", "conda_file", "pip_requirements", "base_image")
"""What only a stack that builds its images sets on them."""


class ImageConfig(ImageBase):
    """An image this stack builds: a scoring image from a script, an environment and models."""

    execution_script: Path
    conda_file: Optional[Path] = None
    """A conda environment, as Azure ML's `Environment.from_conda_specification`."""
    pip_requirements: Optional[Path] = None
    """A pip requirements file, as Azure ML's `Environment.from_pip_requirements`."""
    base_image: str = DEFAULT_BASE_IMAGE

    @field_validator("execution_script", mode="before")
    @classmethod
    def _script_exists(cls, value: Any, info: ValidationInfo) -> Path:
        path = _existing_path(str(value), info, "execution script")
        if path.suffix != ".py" or not path.is_file():
            raise ValueError(f"execution script {value!r} must be a .py file")
        problem = script_problem(path)
        if problem:
            raise ValueError(problem)
        return path

    @field_validator("conda_file", mode="before")
    @classmethod
    def _conda_exists(cls, value: Any, info: ValidationInfo) -> Path:
        path = _existing_path(str(value), info, "conda file")
        if path.suffix not in (".yml", ".yaml") or not path.is_file():
            raise ValueError(f"conda file {value!r} must be a .yml or .yaml file")
        return path

    @field_validator("pip_requirements", mode="before")
    @classmethod
    def _pip_exists(cls, value: Any, info: ValidationInfo) -> Path:
        path = _existing_path(str(value), info, "pip requirements file")
        if not path.is_file():
            raise ValueError(f"pip requirements {value!r} must be a file")
        environment.from_pip(path)  # only this file goes into the image: no `-r other.txt`
        return path

    @model_validator(mode="after")
    def _one_environment(self) -> "ImageConfig":
        # Azure ML's Environment is built from one specification: a conda file or pip requirements.
        if (self.conda_file is None) == (self.pip_requirements is None):
            both = "both are set" if self.conda_file is not None else "neither is set"
            raise ValueError(f"set exactly one of conda_file or pip_requirements ({both})")
        return self

    @property
    def environment(self) -> EnvironmentFile:
        """The image's environment file and its kind."""
        if self.pip_requirements is not None:
            return EnvironmentFile(self.pip_requirements, pip=True)
        assert self.conda_file is not None, "validated by _one_environment"
        return EnvironmentFile(self.conda_file)


# Azure's limits on resource tags: names up to 512 characters without `<>%&\\?/`, values up to 256,
# at most 50 per resource (learn.microsoft.com/azure/azure-resource-manager/management/tag-resources#limitations).
TAG_NAME = r"^[^<>%&\\?/]{1,512}$"
TAG_VALUE_MAX = 256
TAGS_MAX = 50


def _check_tags(tags: dict[str, str]) -> dict[str, str]:
    if len(tags) > TAGS_MAX:
        raise ValueError(f"at most {TAGS_MAX} tags (Azure's limit per resource); got {len(tags)}")
    for key, value in tags.items():
        if not re.match(TAG_NAME, key):
            raise ValueError(f"tag name {key!r} must be 1-512 characters without any of <>%&\\?/")
        if len(value) > TAG_VALUE_MAX:
            raise ValueError(f"tag {key!r}: value longer than {TAG_VALUE_MAX} characters")
    return tags


class ServiceBase(Strict):
    """What every service declares, whatever its target: the Azure ML SDK's common deploy settings.

    Each target subclasses this with `target: Literal["<name>"]` and its own settings, and
    registers the subclass in infra/targets/.
    """

    name: str = Field(pattern=SERVICE_NAME)
    """Azure ML web service name: 3-32 lowercase letters, digits and hyphens, starting with a letter."""
    target: Any
    """The target's name; each target's subclass narrows it to `Literal["<name>"]`."""
    image: Optional[str] = None
    """An image name from `images`; required, except on a service with `deployments` (a
    `SplitService`), where each deployment names its own."""
    description: str = Field(default="", max_length=TAG_VALUE_MAX)
    tags: dict[str, str] = Field(default_factory=dict)
    """Azure resource tags on what the service creates; labels on its Kubernetes objects."""
    auth_enabled: bool = False
    enable_app_insights: bool = False
    scoring_timeout_ms: int = Field(default=60_000, gt=0, le=300_000)

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        return _check_tags(tags)

    @property
    def image_name(self) -> str:
        """The one image of a service without deployments (validated to be set: infra/config.py)."""
        assert self.image is not None, "a service without deployments names its image"
        return self.image

    def image_names(self) -> list[str]:
        """Every image the service runs: its one image, or each deployment's."""
        return [self.image] if self.image is not None else []

    def image_problems(self, path: str) -> list[str]:
        """Cross-field checks of where the service's image comes from, each naming its config path."""
        return [] if self.image is not None else [f"{path}.image: required (an image name from images)"]


# Azure ML's online deployment names, which every target's deployments share: 3-32 characters,
# letters, digits and hyphens, starting with a letter (learn.microsoft.com/azure/machine-learning/
# how-to-manage-quotas#azure-machine-learning-online-endpoints-and-batch-endpoints); lowercase here,
# as they also name Kubernetes objects and processes.
DEPLOYMENT_NAME = r"^[a-z][a-z0-9-]{1,30}[a-z0-9]$"
MIRROR_MAX_PERCENT = 50
"""Mirrored traffic in all, at most (Azure ML's limit; see SplitService)."""


class DeploymentBase(Strict):
    """One entry of a service's `deployments` (Azure ML v2's online deployment): an image serving the
    share of the service's requests its `traffic` says."""

    name: str = Field(pattern=DEPLOYMENT_NAME)
    image: str
    """An image name from `images`."""
    traffic: int = Field(default=0, ge=0, le=100)
    """Percent of the service's requests this deployment answers."""


D = TypeVar("D", bound=DeploymentBase)


class SplitService(ServiceBase, Generic[D]):
    """A service whose target can run several deployments behind one URI and split the traffic
    between them (blue/green, canary), optionally mirroring a share to one that answers nobody."""

    MIRRORS: ClassVar[bool] = True
    """Whether the target can mirror traffic (`mirror_traffic`)."""
    deployments: Optional[Sequence[D]] = Field(default=None, min_length=1)
    """Instead of `image`: the deployments behind the service, each with its share of the traffic
    (each target's own `DeploymentBase` subclass)."""
    mirror_traffic: dict[str, int] = Field(default_factory=dict)
    """Deployment name -> percent of the live requests also sent to it, its answers dropped."""

    def image_names(self) -> list[str]:
        return [d.image for d in self.deployments] if self.deployments else super().image_names()

    def image_problems(self, path: str) -> list[str]:
        if self.deployments is None:
            problems = super().image_problems(path)
            if self.mirror_traffic:
                problems.append(f"{path}.mirror_traffic: only with deployments (it names the deployment to mirror to)")
            return problems
        if self.image is not None:
            return [f"{path}.image: not with deployments (each deployment names its image): remove one of them"]
        return self.traffic_problems(path, {d.name: d.traffic for d in self.deployments}, self.mirror_traffic)

    def traffic_problems(self, path: str, traffic: Mapping[str, int], mirror: Mapping[str, int]) -> list[str]:
        """Azure ML's traffic rules, for every target alike (learn.microsoft.com/azure/machine-learning/
        how-to-safely-rollout-online-endpoints): "The total traffic percentage must sum to either 0%
        (to disable traffic) or 100%"; "The maximum percentage of traffic you can mirror is 50%"; "You
        can mirror traffic to only one deployment in an endpoint"; "A deployment can be configured to
        receive only live traffic or mirrored traffic, not both"."""
        problems: list[str] = []
        names = [d.name for d in self.deployments or []]
        for j, name in enumerate(names):
            if name in names[:j]:
                problems.append(f"{path}.deployments[{j}].name: {name!r} is already used by "
                                f"deployments[{names.index(name)}]")
        total = sum(traffic.values())
        if total not in (0, 100):
            shares = ", ".join(f"{n}={w}" for n, w in traffic.items())
            problems.append(f"{path}.deployments: traffic sums to {total} ({shares}); it must sum to 100 "
                            "(or be 0 everywhere)")
        if mirror and not self.MIRRORS:
            problems.append(f"{path}.mirror_traffic: target {self.target!r} cannot mirror traffic")
            return problems
        for name, share in mirror.items():
            where = f"{path}.mirror_traffic.{name}"
            if name not in traffic:
                problems.append(f"{where}: no deployment named {name!r} (deployments: {', '.join(traffic)})")
            elif traffic[name] > 0:
                problems.append(f"{where}: {name!r} has live traffic ({traffic[name]}%); only a deployment with "
                                "traffic 0 can be mirrored to")
            if not 0 < share <= 100:
                problems.append(f"{where}: {share} is not a percent between 1 and 100")
        if len(mirror) > 1:
            problems.append(f"{path}.mirror_traffic: mirrors to {len(mirror)} deployments; traffic can be "
                            "mirrored to one deployment only")
        if sum(mirror.values()) > MIRROR_MAX_PERCENT:
            problems.append(f"{path}.mirror_traffic: {sum(mirror.values())}% in all; at most "
                            f"{MIRROR_MAX_PERCENT}% of the traffic can be mirrored")
        return problems


BATCH_TARGETS = ("local", "kubernetes", "aks", "batch_endpoint")
"""Where a batch job can run, as the config names them (docs/batch.md)."""
CLUSTER_BATCH_TARGETS = ("kubernetes", "aks")
"""Batch targets that run the job as an indexed Job on a cluster of the stack (`cluster`, `storage_class`)."""


class BatchComputeConfig(Strict):
    """`batch[i].compute` of a `batch_endpoint` job: the Azure ML compute cluster (AmlCompute) its
    deployment runs on, created by the stack, or an existing one of the workspace by `name`."""

    # Compute names: 3-24 characters, letters, digits and `-`, starting with a letter, a `-` followed
    # later by a letter, unique in the region (learn.microsoft.com/azure/machine-learning/
    # how-to-create-attach-compute-cluster); ml-deploy's derived names use no `-`.
    name: Optional[str] = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9-]*$", min_length=3, max_length=24)
    """An existing compute cluster of the workspace; unset: the stack creates one for the job."""
    # Not the CLI's Standard_DS3_v2 default (reference-yaml-compute-aml): the Dsv2 series is under
    # capacity restrictions (infra/vm_sizes.py); 4 vCPUs too, on the current series.
    vm_size: str = "Standard_D4s_v5"
    min_instances: int = Field(default=0, ge=0)
    """Nodes kept when idle; 0 (Azure ML's default) costs nothing between jobs."""
    max_instances: Optional[int] = Field(default=None, ge=1)
    """Nodes at most; default: the job's instance_count."""
    # reference-yaml-compute-aml: idle_time_before_scale_down defaults to 120 (seconds).
    idle_seconds: int = Field(default=120, ge=0)
    """How long an idle node stays before the cluster scales down."""

    @field_validator("name")
    @classmethod
    def _dash_then_letter(cls, name: Optional[str]) -> Optional[str]:
        if name is not None and "-" in name and not any(c.isalpha() for c in name.rsplit("-", 1)[1]):
            raise ValueError(f"{name!r}: a compute name's `-` must be followed later by a letter")
        return name


class BatchJobConfig(Strict):
    """One entry of `ml-deploy:batch`: a batch scoring job running an image's score.py over a CSV or a
    folder of files. Defaults are Azure ML's batch deployment settings (azure.ai.ml's
    ModelBatchDeploymentSettings: mini_batch_size 10, max_concurrency_per_instance 1, output_action
    append_row, output_file_name predictions.csv; BatchDeployment: error_threshold -1)."""

    name: str = Field(pattern=SERVICE_NAME)
    image: str
    """An image name from `images`: its score.py, environment and models."""
    target: str = "local"
    mini_batch_size: int = Field(default=10, ge=1)
    """Rows (CSV input) or files (a folder) per run() call."""
    max_concurrency: int = Field(default=1, ge=1, le=64)
    """Worker processes, each calling init() once."""
    instance_count: int = Field(default=1, ge=1)
    error_threshold: int = Field(default=-1, ge=-1)
    """Failed items allowed before the job fails; -1: no limit."""
    retries: int = Field(default=2, ge=0)
    """More tries of a mini-batch whose run() raised, before its items are tried one by one."""
    output_action: Literal["append_row", "summary_only"] = "append_row"
    output_file_name: str = Field(default="predictions.csv", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$")
    input_format: Optional[Literal["tabular", "json_rows", "files"]] = None
    """How run() gets a mini-batch: a DataFrame (`tabular`, CSV input's default), `{"data": rows}` as
    the online service gets it (`json_rows`), or file paths (`files`, a folder's default)."""
    # On a cluster (`target: kubernetes` or `aks`): where the Job's pods run and what they get.
    cluster: Optional[str] = None
    """kubernetes: a cluster name from `kubernetes_clusters`; aks: one from `aks_clusters`."""
    namespace: str = Field(default="ml-deploy", pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    cpu_cores: float = Field(default=1, gt=0)
    """Per pod: its CPU request and limit (each pod runs one worker)."""
    memory_gb: float = Field(default=1, gt=0)
    storage_class: Optional[str] = None
    """The StorageClass of the job's volume (input, kept mini-batches, output), which every pod mounts
    at once: one that gives ReadWriteMany on a cluster of several nodes; unset: the cluster's default
    (on `aks`: AKS's built-in `azurefile-csi`, an Azure Files share)."""
    storage_size: str = Field(default="10Gi", pattern=r"^[0-9]+(Mi|Gi|Ti)$")
    # On Azure ML (`target: batch_endpoint`). Defaults are azure-ai-ml's BatchDeployment's (logging_level
    # "info"; BatchRetrySettings timeout 30 seconds).
    compute: Optional[BatchComputeConfig] = None
    """batch_endpoint: the compute cluster; unset: one the stack creates with the defaults above."""
    logging_level: Literal["info", "warning", "debug"] = "info"
    """batch_endpoint: the batch driver's log level."""
    timeout_seconds: int = Field(default=30, ge=1)
    """batch_endpoint: how long one mini-batch's run() may take before Azure ML retries it."""


class PromotedConfig(Strict):
    """`ml-deploy:promoted`: what `ml-deploy promote` pinned from the source stack's outputs, reviewed
    in git. The stack runs these and nothing else until it is promoted again."""

    stack: str = Field(pattern=STACK_NAME)
    """The stack the pins were read from; must be `promote_from`."""
    images: dict[str, str] = Field(default_factory=dict)
    """Image name -> reference pinned by digest (`<registry>/<image>@sha256:...`, `local/<image>@sha256:...`)."""
    models: dict[str, str] = Field(default_factory=dict)
    """Model name -> the version the source stack registered (its content digest)."""

    @field_validator("images")
    @classmethod
    def _digest_refs(cls, images: dict[str, str]) -> dict[str, str]:
        for name, ref in images.items():
            if not DIGEST_REF.match(ref):
                raise ValueError(f"{name}: {ref!r} is not an image reference pinned by digest (<repository>@sha256:<64 hex>)")
        return images

    @field_validator("models")
    @classmethod
    def _versions(cls, models: dict[str, str]) -> dict[str, str]:
        for name, version in models.items():
            if not re.match(MODEL_VERSION, version):
                raise ValueError(f"{name}: {version!r} is not a model version (12 hex digits)")
        return models


class TlsSettings(Strict):
    """The Azure ML SDK's TLS settings of a deploy configuration (`ssl_enabled`, `ssl_cert_pem_file`,
    `ssl_key_pem_file`, `ssl_cname`): the scoring runtime serves HTTPS itself with this certificate."""

    ssl_enabled: bool = False
    ssl_cert_pem_file: Optional[Path] = None
    """PEM certificate chain, server certificate first. Read at deploy time; kept in state as a secret."""
    ssl_key_pem_file: Optional[Path] = None
    """PEM private key (unencrypted). Read at deploy time; kept in state as a secret, never plain."""
    ssl_cname: Optional[str] = Field(default=None, max_length=253,
                                     pattern=r"^([a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,63}$")
    """The DNS name clients use (a CNAME you point at the service); the scoring URI's host."""

    @field_validator("ssl_cert_pem_file", "ssl_key_pem_file", mode="before")
    @classmethod
    def _pem_exists(cls, value: Any, info: ValidationInfo) -> Optional[Path]:
        if value is None:
            return None
        path = _existing_path(str(value), info, "PEM file")
        if b"-----BEGIN " not in path.read_bytes()[:4096]:
            raise ValueError(f"{value!r} is not a PEM file (no -----BEGIN line)")
        return path

    def tls_certificate(self) -> Optional["TlsCertificate"]:
        """The certificate to serve, read from the PEM files as secrets; None without TLS."""
        from components.service import TlsCertificate

        if not (self.ssl_enabled and self.ssl_cert_pem_file and self.ssl_key_pem_file):
            return None
        return TlsCertificate.from_files(self.ssl_cert_pem_file, self.ssl_key_pem_file, self.ssl_cname)

    def tls_problems(self, path: str) -> list[str]:
        """Cross-field checks, each naming its config path."""
        problems: list[str] = []
        files = (("ssl_cert_pem_file", self.ssl_cert_pem_file), ("ssl_key_pem_file", self.ssl_key_pem_file))
        if self.ssl_enabled:
            problems += [f"{path}.{key}: required with ssl_enabled: true" for key, value in files if value is None]
        else:
            problems += [f"{path}.{key}: set ssl_enabled: true to serve HTTPS with it" for key, value in files
                         if value is not None]
            if self.ssl_cname:
                problems.append(f"{path}.ssl_cname: set ssl_enabled: true to serve HTTPS under it")
        return problems


Section = TypeVar("Section", bound=BaseModel)


@dataclass(frozen=True)
class StackConfig:
    """Everything one stack declares, validated."""

    workspace: WorkspaceConfig
    models: list[ModelConfig] = field(default_factory=list)
    images: list[ImageBase] = field(default_factory=list)
    """`ImageConfig`s on a stack that builds its images; `ImageBase`s on a promoted one."""
    services: list[ServiceBase] = field(default_factory=list)
    """Each one an instance of its target's config class."""
    sections: dict[str, list[BaseModel]] = field(default_factory=dict)
    """Target-owned shared sections by key (`aks_clusters`: the clusters services run on)."""
    promote_from: Optional[str] = None
    """The stack whose images and model versions this one runs, instead of building its own."""
    promoted: Optional[PromotedConfig] = None
    """With `promote_from`: the pinned images and model versions."""
    batch: list[BatchJobConfig] = field(default_factory=list)
    """Batch scoring jobs (`ml-deploy:batch`)."""

    def model(self, name: str) -> ModelConfig:
        return next(m for m in self.models if m.name == name)

    def image(self, name: str) -> ImageBase:
        return next(i for i in self.images if i.name == name)

    def built_images(self) -> list[ImageConfig]:
        """The images this stack builds (none on a promoted stack)."""
        return [i for i in self.images if isinstance(i, ImageConfig)]

    def section(self, key: str, kind: type[Section]) -> list[Section]:
        """The entries of a target-owned section, typed."""
        return [item for item in self.sections.get(key, []) if isinstance(item, kind)]

    def services_of(self, kind: type[Section]) -> list[tuple[int, Section]]:
        """(index in `services`, config) of every service whose config is a `kind`."""
        return [(i, s) for i, s in enumerate(self.services) if isinstance(s, kind)]
