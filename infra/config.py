"""The stack config: read once from `Pulumi.<stack>.yaml`, validated into typed objects."""

from __future__ import annotations

import ast
import difflib
import json
import os
import re
from pathlib import Path
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Literal, Mapping, Optional, TypeVar

import pulumi
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from content import environment
from content.bundle import EnvironmentFile

from infra.vm_sizes import CLOCK, ENDED_TARGETS

if TYPE_CHECKING:
    from components.service import TlsCertificate
    from infra.targets import Target

PROJECT = "ml-deploy"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
"""Relative paths in the stack config are relative to this folder (the one holding Pulumi.yaml)."""

# The config keys every stack may set, in the order of the Azure ML workflow. Targets add their own
# shared sections (`aks_clusters`, ...) through the target registry (infra/targets/).
KEYS = ("workspace", "models", "images", "services", "promote_from", "promoted")

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


class ConfigError(pulumi.RunError):
    """The stack config is invalid. The message lists every problem with its config path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack config:\n" + "\n".join(f"  {p}" for p in problems))


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
    image: str
    """An image name from `images`."""
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


class _Common(Strict):
    workspace: WorkspaceConfig
    models: list[ModelConfig] = Field(default_factory=list)
    promote_from: Optional[str] = Field(default=None, pattern=STACK_NAME)
    promoted: Optional[PromotedConfig] = None


def _format_loc(loc: tuple[Any, ...], prefix: str = "") -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _errors(err: ValidationError, prefix: str = "") -> list[str]:
    return [f"{_format_loc(e['loc'], prefix)}: {_message(e)}" for e in err.errors()]


def _validate_list(key: str, raw: Any, model: type[BaseModel], root: Path) -> tuple[list[BaseModel], list[str]]:
    if not isinstance(raw, list):
        return [], [f"{key}: must be a list"]
    items: list[BaseModel] = []
    problems: list[str] = []
    for i, item in enumerate(raw):
        try:
            items.append(model.model_validate(item, context={"root": root}))
        except ValidationError as err:
            problems += _errors(err, f"{key}[{i}]")
    return items, problems


def _validate_services(raw: Any, targets: dict[str, "Target"], root: Path) -> tuple[list[ServiceBase], list[str]]:
    """Each entry validated by the config class of the target it names."""
    if not isinstance(raw, list):
        return [], ["services: must be a list"]
    services: list[ServiceBase] = []
    problems: list[str] = []
    known = ", ".join(targets)
    for i, item in enumerate(raw):
        path = f"services[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{path}: must be a mapping with at least name, image and target")
            continue
        name = item.get("target")
        if name is None:
            problems.append(f"{path}.target: required (one of: {known})")
            continue
        target = targets.get(str(name))
        if target is None:
            ended = ENDED_TARGETS.get(str(name))  # an Azure ML SDK target that is gone: say so, with dates
            problems.append(f"{path}.target: " + (ended(CLOCK.today()) if ended else
                                                  f"unknown target {name!r} (one of: {known})"))
            continue
        try:
            services.append(target.config.model_validate(item, context={"root": root}))
        except ValidationError as err:
            problems += _errors(err, path)
    return services, problems


def _common_problems(cfg: StackConfig, targets: dict[str, "Target"]) -> list[str]:
    problems: list[str] = []
    if cfg.workspace.registry is not None and cfg.workspace.kind != "local":
        problems.append("workspace.registry: only with kind: local (an Azure workspace pushes to its own registry)")
    lists: list[tuple[str, list[Any]]] = [("models", cfg.models), ("images", cfg.images), ("services", cfg.services)]
    lists += list(cfg.sections.items())
    for key, items in lists:
        seen: dict[str, int] = {}
        for i, item in enumerate(items):
            name = getattr(item, "name", None)
            if name is None:
                continue
            if name in seen:
                problems.append(f"{key}[{i}].name: {name!r} is already used by {key}[{seen[name]}]")
            seen.setdefault(name, i)
    model_names = {m.name for m in cfg.models}
    for i, image in enumerate(cfg.images):
        for j, model in enumerate(image.models):
            if model not in model_names:
                problems.append(f"images[{i}].models[{j}]: no model named {model!r} in models")
        if len(set(image.models)) != len(image.models):
            problems.append(f"images[{i}].models: lists a model twice")
    image_names = {im.name for im in cfg.images}
    kind = cfg.workspace.kind
    for i, service in enumerate(cfg.services):
        if service.image not in image_names:
            problems.append(f"services[{i}].image: no image named {service.image!r} in images")
        if isinstance(service, TlsSettings):
            problems += service.tls_problems(f"services[{i}]")
        target = targets[service.target]
        if kind not in target.workspace_kinds:
            problems.append(f"services[{i}].target: {service.target!r} needs a workspace of kind "
                            f"{' or '.join(target.workspace_kinds)} (workspace.kind is {kind!r})")
    for target in targets.values():
        for key in target.sections:
            if cfg.sections.get(key) and kind not in target.workspace_kinds:
                problems.append(f"{key}: needs a workspace of kind {' or '.join(target.workspace_kinds)} "
                                f"(workspace.kind is {kind!r})")
    return problems


def _validate_images(raw: Any, promoted: bool, root: Path) -> tuple[list[ImageBase], list[str]]:
    """Images a stack builds, or on a promoted stack the images it takes (no build keys)."""
    if not promoted:
        images, problems = _validate_list("images", raw, ImageConfig, root)
        return [i for i in images if isinstance(i, ImageBase)], problems
    if not isinstance(raw, list):
        return [], ["images: must be a list"]
    problems: list[str] = []
    stripped: list[Any] = []
    for i, item in enumerate(raw):
        if isinstance(item, dict):
            for key in BUILD_KEYS:
                if key in item:
                    problems.append(f"images[{i}].{key}: not used on a promoted stack, which builds nothing "
                                    f"(the image comes from the promote_from stack): remove it")
            item = {k: v for k, v in item.items() if k not in BUILD_KEYS}
        stripped.append(item)
    images, more = _validate_list("images", stripped, ImageBase, root)
    return [i for i in images if isinstance(i, ImageBase)], problems + more


def _promotion_problems(cfg: StackConfig, stack: Optional[str]) -> list[str]:
    """`promote_from` and `promoted` agree with each other, with this stack and with its images and models."""
    source, pins = cfg.promote_from, cfg.promoted
    if source is None:
        return ["promoted: only with promote_from (the stack the pins come from)"] if pins is not None else []
    command = PROMOTE_COMMAND.format(source=source, stack=stack or "<this stack>")
    if source == stack:
        return [f"promote_from: a stack cannot promote from itself ({stack!r})"]
    if pins is None:
        return [f"promoted: required with promote_from: pin what {source!r} runs with `{command}`"]
    if pins.stack != source:
        return [f"promoted.stack: pinned from {pins.stack!r}, but promote_from is {source!r}: run `{command}`"]
    problems: list[str] = []
    local = cfg.workspace.kind == "local"
    for i, image in enumerate(cfg.images):
        ref = pins.images.get(image.name)
        if ref is None:
            problems.append(f"images[{i}]: {image.name!r} is not pinned in promoted.images: run `{command}`")
            continue
        match = DIGEST_REF.match(ref)
        repository = match.group("repository") if match else ""
        if local != repository.startswith("local/"):
            problems.append(f"promoted.images.{image.name}: {ref!r} is {'not ' if local else ''}a local image, "
                            f"and this stack's workspace is of kind {cfg.workspace.kind!r}")
        elif repository.rsplit("/", 1)[-1] != image.name:
            problems.append(f"promoted.images.{image.name}: {ref!r} is not an image named {image.name!r}")
    for name in sorted(set(pins.images) - {i.name for i in cfg.images}):
        problems.append(f"promoted.images.{name}: no image named {name!r} in images: run `{command}`")
    for i, model in enumerate(cfg.models):
        if model.name not in pins.models:
            problems.append(f"models[{i}]: {model.name!r} is not pinned in promoted.models: run `{command}`")
    for name in sorted(set(pins.models) - {m.name for m in cfg.models}):
        problems.append(f"promoted.models.{name}: no model named {name!r} in models: run `{command}`")
    return problems


def parse(raw: dict[str, Any], root: Path = PROJECT_ROOT, stack: Optional[str] = None) -> StackConfig:
    """Validate the `ml-deploy:` config values (key without namespace -> value) into a StackConfig.

    `stack` is the stack being deployed (a stack cannot promote from itself). Raises ConfigError
    naming every invalid path; nothing is registered before this returns.
    """
    from infra.targets import registry  # the targets import this module for their base classes

    targets = registry()
    section_models = {key: model for t in targets.values() for key, model in t.sections.items()}
    allowed = (*KEYS, *section_models)
    problems = [f"{k}: unknown key (expected one of: {', '.join(allowed)})" for k in sorted(set(raw) - set(allowed))]
    if "workspace" not in raw:
        problems.append("workspace: required (at least `name`)")
    if problems:
        raise ConfigError(problems)
    common: _Common | None = None
    try:
        common = _Common.model_validate(
            {k: raw[k] for k in ("workspace", "models", "promote_from", "promoted") if k in raw}, context={"root": root}
        )
    except ValidationError as err:
        problems += _errors(err)
    images, image_problems = _validate_images(raw.get("images", []), raw.get("promote_from") is not None, root)
    problems += image_problems
    sections: dict[str, list[BaseModel]] = {}
    for key, model in section_models.items():
        sections[key], section_problems = _validate_list(key, raw.get(key, []), model, root)
        problems += section_problems
    services, service_problems = _validate_services(raw.get("services", []), targets, root)
    problems += service_problems
    if problems or common is None:
        raise ConfigError(problems)
    cfg = StackConfig(common.workspace, common.models, images, services, sections,
                      promote_from=common.promote_from, promoted=common.promoted)
    problems = _promotion_problems(cfg, stack) + _common_problems(cfg, targets)
    for target in targets.values():
        problems += target.check(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def _message(error: Any) -> str:
    msg = str(error["msg"])
    # pydantic prefixes validator errors with "Value error, "; the path already says where.
    return msg.removeprefix("Value error, ")


def project_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The `ml-deploy:` keys of an engine config map (full key -> JSON text), namespace dropped, decoded."""
    raw: dict[str, Any] = {}
    for full_key, value in values.items():
        namespace, _, key = full_key.partition(":")
        if namespace == PROJECT:
            raw[key] = _decode(value)
    return raw


PROVIDER_NAMESPACES = ("azure-native", "kubernetes", "docker-build", "random", "pulumi")
"""Config namespaces read by someone other than this program: the providers it uses (each reads its
own, e.g. `azure-native:location`) and the engine's (`pulumi:`)."""


def namespace_problems(keys: Iterable[str]) -> list[str]:
    """A config key in a namespace nobody reads (`mldeploy:services`): a typo that would silently
    deploy nothing, so an error naming the key and the closest namespace."""
    known = (PROJECT, *PROVIDER_NAMESPACES)
    problems = []
    for key in sorted(keys):
        namespace, sep, rest = key.partition(":")
        if not sep or namespace in known:
            continue
        close = difflib.get_close_matches(namespace, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}:{rest}? " if close else ""
        problems.append(f"{key}: unknown config namespace {namespace!r}: {hint}this program reads {PROJECT}: keys "
                        f"and its providers' ({', '.join(PROVIDER_NAMESPACES)})")
    return problems


def load() -> StackConfig:
    """Read this stack's `ml-deploy:` config from the Pulumi engine (or its mocks) and validate it."""
    # The SDK exposes no listing of config keys; the runtime's config map is where the engine puts
    # them, and listing it is how a misspelt key or namespace becomes an error instead of a silent no-op.
    values = pulumi.runtime.config.CONFIG.get()
    problems = namespace_problems(values)
    if problems:
        raise ConfigError(problems)
    return parse(project_values(values), stack=pulumi.get_stack())


def _decode(value: Any) -> Any:
    # Object values arrive as JSON text from the engine; plain strings stay strings.
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value
