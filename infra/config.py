"""The stack config: read once from `Pulumi.<stack>.yaml`, validated into typed objects (the models
in infra/schema.py) and checked against the target registry (infra/targets/)."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import pulumi
from pydantic import BaseModel, Field, ValidationError

from infra.schema import (BATCH_TARGETS, CLUSTER_BATCH_TARGETS, BUILD_KEYS, DIGEST_REF, PROJECT, PROJECT_ROOT, PROMOTE_COMMAND, STACK_NAME, ImageBase,
                          BatchJobConfig, ImageConfig, ModelConfig, PromotedConfig, ServiceBase, SplitService, StackConfig, Strict,
                          TlsSettings, WorkspaceConfig)
from infra.targets import Target, batch_runners, registry
from infra.vm_sizes import CLOCK, ENDED_TARGETS

# The config keys every stack may set, in the order of the Azure ML workflow. Targets add their own
# shared sections (`aks_clusters`, ...) through the target registry (infra/targets/).
KEYS = ("workspace", "models", "images", "services", "batch", "promote_from", "promoted")

SPLIT_KEYS = {"deployments", "mirror_traffic"}
"""What only a service whose target can split traffic sets (a `SplitService`)."""


def split_targets(targets: Mapping[str, Target[Any]]) -> list[str]:
    """The targets whose services can have deployments and a traffic split."""
    return [name for name, t in targets.items() if issubclass(t.config, SplitService)]


class ConfigError(pulumi.RunError):
    """The stack config is invalid. The message lists every problem with its config path."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack config:\n" + "\n".join(f"  {p}" for p in problems))



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


def _validate_services(raw: Any, targets: dict[str, Target[Any]], root: Path) -> tuple[list[ServiceBase], list[str]]:
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
        if not issubclass(target.config, SplitService):
            for key in sorted(SPLIT_KEYS & set(item)):
                problems.append(f"{path}.{key}: target {name!r} runs one image per service and does not split "
                                f"traffic between deployments (targets that do: {', '.join(split_targets(targets))})")
            item = {k: v for k, v in item.items() if k not in SPLIT_KEYS}
        try:
            services.append(target.config.model_validate(item, context={"root": root}))
        except ValidationError as err:
            problems += _errors(err, path)
    return services, problems


def _common_problems(cfg: StackConfig, targets: dict[str, Target[Any]]) -> list[str]:
    problems: list[str] = []
    if cfg.workspace.registry is not None and cfg.workspace.kind != "local":
        problems.append("workspace.registry: only with kind: local (an Azure workspace pushes to its own registry)")
    lists: list[tuple[str, list[Any]]] = [("models", cfg.models), ("images", cfg.images), ("services", cfg.services),
                                          ("batch", cfg.batch)]
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
        problems += service.image_problems(f"services[{i}]")
        if service.image is not None and service.image not in image_names:
            problems.append(f"services[{i}].image: no image named {service.image!r} in images")
        for j, deployment in enumerate(getattr(service, "deployments", None) or []):
            if deployment.image not in image_names:
                problems.append(f"services[{i}].deployments[{j}].image: no image named {deployment.image!r} in images")
        if isinstance(service, TlsSettings):
            problems += service.tls_problems(f"services[{i}]")
        target = targets[service.target]
        if kind not in target.workspace_kinds:
            problems.append(f"services[{i}].target: {service.target!r} needs a workspace of kind "
                            f"{' or '.join(target.workspace_kinds)} (workspace.kind is {kind!r})")
    runners = batch_runners(targets)
    for i, job in enumerate(cfg.batch):
        if job.image not in image_names:
            problems.append(f"batch[{i}].image: no image named {job.image!r} in images")
        if job.target not in BATCH_TARGETS:
            problems.append(f"batch[{i}].target: unknown batch target {job.target!r} (one of: {', '.join(BATCH_TARGETS)})")
        elif job.target not in runners:
            problems.append(f"batch[{i}].target: {job.target!r} batch jobs are not built yet in this version; "
                            f"{', '.join(runners)} are (see docs/batch.md)")
        elif kind not in runners[job.target].workspace_kinds:
            problems.append(f"batch[{i}].target: {job.target!r} needs a workspace of kind "
                            f"{' or '.join(runners[job.target].workspace_kinds)} (workspace.kind is {kind!r})")
        if job.target not in CLUSTER_BATCH_TARGETS:
            for key in ("cluster", "storage_class"):
                if getattr(job, key) is not None:
                    problems.append(f"batch[{i}].{key}: only for target: kubernetes or aks (this job's is {job.target!r})")
        if job.target in ("local", *CLUSTER_BATCH_TARGETS) and job.instance_count != 1:
            problems.append(f"batch[{i}].instance_count: for batch_endpoint; scale a {job.target} job with "
                            "max_concurrency (its workers; on a cluster, its pods)")
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
    batch, batch_problems = _validate_list("batch", raw.get("batch", []), BatchJobConfig, root)
    problems += batch_problems
    if problems or common is None:
        raise ConfigError(problems)
    cfg = StackConfig(common.workspace, common.models, images, services, sections,
                      promote_from=common.promote_from, promoted=common.promoted,
                      batch=[b for b in batch if isinstance(b, BatchJobConfig)])
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


# Pulumi's configuration docs (pulumi.com/docs/iac/concepts/config): a key is `<namespace>:<name>`, a
# provider reads its own under its package name, and `pulumi:` is the engine's. These are the
# packages of requirements.txt (pulumi-azure-native, -kubernetes, -docker-build, -random).
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
