"""The `local` target's components: a model registered in a folder registry, an image bundle tagged
by content like the container image, the image's environment as a venv, and the scoring runtime
serving the bundle with that venv on 127.0.0.1.

The create/read/update/delete behind them lives in `providers/local.py`.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pulumi

from components import TOKEN_PREFIX
from components.service import ScoringService
from components.runtime import SECRET_OUTPUTS, ServiceRuntime
from content.bundle import TAG_LEN, EnvironmentFile, content_digest, model_dir, scoring_bundle
from content.model import BundledModel
from providers.router import ServiceKeys, TrafficRouter
from providers.local import (
    BundleProvider,
    EnvironmentProvider,
    Folder,
    ModelVersionProvider,
    PromotedBundleProvider,
    ServiceProcess,
    ServiceProvider,
    log_path,
)

# State written before the providers moved to `providers/local.py` names them by these old paths
# (dynamic providers are pickled by module and class name); the aliases keep that state loadable.
_ModelVersionProvider = ModelVersionProvider
_BundleProvider = BundleProvider
_ServiceProvider = ServiceProvider

IMAGE_STORE = "images"
"""The folder of a local workspace holding the bundles it builds (`<workspace>/images/<image>/<tag>/`)."""
PROMOTED_STORE = "promoted"
"""The folder holding the bundles a promoted stack copies in: apart from `images/`, so a stack that
switches between building and promoting never deletes, with the old resource, the folder the new
one uses."""


def digest_ref(image: str, digest: str) -> str:
    """A local image pinned by its bundle digest: `local/<image>@sha256:<digest>`, like a registry's."""
    return f"local/{image}@sha256:{digest}"


@dataclass(frozen=True)
class LocalModelArgs:
    """Inputs of a LocalModel."""

    registry: str
    """The folder holding `<model>/<version>/` folders."""
    model: BundledModel
    protect: bool = False
    """Protect the version folder from deletion (the config's `workspace.protect`)."""


class LocalModel(pulumi.ComponentResource):
    """A model registered in the folder registry under the same content version as in Azure ML."""

    version: str
    path: pulumi.Output[str]

    def __init__(self, name: str, args: LocalModelArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TOKEN_PREFIX}:LocalModel", name, None, opts)
        self.version = args.model.version
        files = [[str(f.source.resolve()), str(f.relative)] for f in args.model.files]
        resource = Folder(
            ModelVersionProvider(),
            f"{name}-version",
            {"registry": args.registry, "model": args.model.name, "version": self.version, "files": files},
            # A registered version is what services and promotions point at, like the Azure model
            # container: a stack that protects its workspace protects its model registry too.
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect),
        )
        self.path = resource.path
        self.register_outputs({"version": self.version, "path": self.path})


@dataclass(frozen=True)
class LocalImageArgs:
    """Inputs of a LocalImage."""

    store: str
    execution_script: Path
    environment: EnvironmentFile
    models: list[BundledModel]
    runtime_root: Path
    base_image: str
    """Only part of the generated Dockerfile here; it keeps the tag equal to the container image's."""
    depends_on: list[pulumi.Resource]
    """The registered models, so a bundle never exists before its models are registered."""


class LocalImage(pulumi.ComponentResource):
    """The scoring bundle of an image, stored locally and tagged by content like the container image."""

    tag: str
    digest: str
    """The bundle's SHA-256 over its paths and bytes (64 hex digits); `tag` is its start."""
    digest_ref: str
    """`local/<image>@sha256:<digest>`: what a stack promoted from this one pins."""
    image_ref: pulumi.Output[str]
    """`local/<image>:<tag>`."""
    path: pulumi.Output[str]
    model_dir: str
    """`AZUREML_MODEL_DIR` relative to the bundle's app folder."""

    def __init__(self, name: str, args: LocalImageArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TOKEN_PREFIX}:LocalImage", name, None, opts)
        sources = scoring_bundle(
            args.execution_script, args.environment, args.models, args.runtime_root, args.base_image
        )
        self.digest = content_digest(sources)
        self.digest_ref = digest_ref(name, self.digest)
        self.tag = self.digest[:TAG_LEN]
        self.model_dir = str(model_dir(args.models))
        bundle = Folder(
            BundleProvider(),
            f"{name}-bundle",
            {"store": args.store, "image": name, "tag": self.tag,
             # Plain data for the provider process: a file's absolute path, or generated text.
             "sources": [[str(rel), "file", str(src.resolve())] if isinstance(src, Path) else [str(rel), "text", src]
                         for rel, src in sorted(sources.items())]},
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        self.path = bundle.path
        self.image_ref = pulumi.Output.concat("local/", name, ":", self.tag)
        self.register_outputs({"image_ref": self.image_ref, "path": self.path})


@dataclass(frozen=True)
class PromotedBundleArgs:
    """Inputs of a PromotedBundle."""

    store: str
    """This stack's image store."""
    source_stack: str
    """The stack the bundle is promoted from (for messages)."""
    source_store: pulumi.Input[str]
    """The source stack's image store, read from its outputs."""
    digest: str
    """The pinned bundle digest (64 hex digits)."""
    models: list[BundledModel]
    """The models the bundle must carry, at the pinned versions."""
    depends_on: list[pulumi.Resource]
    """The registered models, so a bundle never exists before its models are registered."""


class PromotedBundle(pulumi.ComponentResource):
    """Another stack's image bundle, copied into this stack's image store and checked against the
    pinned digest: the same content tag and bytes, rebuilt from nothing here."""

    tag: str
    digest: str
    digest_ref: str
    """`local/<image>@sha256:<digest>`, the pin, exported again so stacks can promote from this one."""
    image_ref: pulumi.Output[str]
    """`local/<image>:<tag>`, as the source stack names it."""
    path: pulumi.Output[str]
    """The copy in this stack's store."""
    model_dir: str
    """`AZUREML_MODEL_DIR` relative to the bundle's app folder."""

    def __init__(self, name: str, args: PromotedBundleArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TOKEN_PREFIX}:PromotedBundle", name, None, opts)
        self.digest = args.digest
        self.digest_ref = digest_ref(name, self.digest)
        self.tag = self.digest[:TAG_LEN]
        self.model_dir = str(model_dir(args.models))
        bundle = Folder(
            PromotedBundleProvider(),
            f"{name}-bundle",
            {"store": args.store, "image": name, "tag": self.tag, "digest": self.digest,
             "source_stack": args.source_stack, "source_store": args.source_store,
             "models": [[m.name, m.version] for m in args.models]},
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        self.path = bundle.path
        self.image_ref = pulumi.Output.concat("local/", name, ":", self.tag)
        self.register_outputs({"image_ref": self.image_ref, "path": self.path})


@dataclass(frozen=True)
class LocalEnvironmentArgs:
    """Inputs of a LocalEnvironment."""

    cache: str
    """The folder of venvs by key, shared by every stack (outside the work tree)."""
    key: str
    """The venv's content address (`content.environment.environment_key`, or a promoted bundle's tag)."""
    interpreter: Optional[str] = None
    """The Python that makes the venv."""
    requirements: Optional[list[str]] = None
    """pip requirement lines: the environment's, then the scoring runtime's."""
    source: Optional[str] = None
    """The environment file, named in errors."""
    bundle: Optional[pulumi.Input[str]] = None
    """Instead of the three above: a bundle whose own environment file and runtime the venv is
    made from when it is created (a promoted bundle, copied during `up`)."""


class LocalEnvironment(pulumi.ComponentResource):
    """An image's environment as a venv, built once per key and shared: a local service runs with
    the packages its image would have, not with the project's own."""

    python: pulumi.Output[str]
    """The venv's python."""

    def __init__(self, name: str, args: LocalEnvironmentArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TOKEN_PREFIX}:LocalEnvironment", name, None, opts)
        venv = Folder(
            EnvironmentProvider(),
            f"{name}-venv",
            {"cache": args.cache, "key": args.key, "interpreter": args.interpreter,
             "requirements": args.requirements, "source": args.source, "bundle": args.bundle},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.python = pulumi.Output.concat(venv.path, "/bin/python")
        self.register_outputs({"python": self.python})


@dataclass(frozen=True)
class LocalServiceArgs:
    """Inputs of a LocalService."""

    bundle_path: pulumi.Input[str]
    python: pulumi.Input[str]
    """The python of the image's environment (a LocalEnvironment's)."""
    model_dir: str
    log_dir: str
    runtime: ServiceRuntime
    """The service's runtime: workers, timeout, auth, TLS (the PEMs written to the workspace's `tls/`
    for the process, readable by this user only)."""
    port: int = 0
    """0 picks a free port at create time and keeps it across updates."""


class LocalService(ScoringService):
    """The scoring runtime serving an image bundle on 127.0.0.1, restarted when the bundle or settings change."""

    log_path: str
    """The runtime's log file."""

    def __init__(self, name: str, args: LocalServiceArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TOKEN_PREFIX}:LocalService", name, None, opts)
        process = ServiceProcess(
            f"{name}-process",
            {"service": name, "bundle": args.bundle_path, "python": args.python, "model_dir": args.model_dir,
             "log_dir": args.log_dir,
             "port": args.port, **args.runtime.process_inputs()},
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=SECRET_OUTPUTS),
        )
        self.scoring_uri = process.scoring_uri
        self.swagger_uri = process.swagger_uri
        self.primary_key = pulumi.Output.secret(process.primary_key)
        self.secondary_key = pulumi.Output.secret(process.secondary_key)
        self.log_path = str(log_path(args.log_dir, name))
        self.register_service_outputs()


ROUTER_SOURCE = Path(__file__).resolve().parents[1] / "serving" / "router.py"


@dataclass(frozen=True)
class LocalDeploymentArgs:
    """One deployment of a LocalEndpoint: an image bundle served by its own runtime process."""

    name: str
    bundle_path: pulumi.Input[str]
    python: pulumi.Input[str]
    """The python of the image's environment (a LocalEnvironment's)."""
    model_dir: str
    workers: int
    traffic: int
    """Percent of the service's requests it answers."""


@dataclass(frozen=True)
class LocalEndpointArgs:
    """Inputs of a LocalEndpoint."""

    deployments: list[LocalDeploymentArgs]
    log_dir: str
    runtime: ServiceRuntime
    """The service's runtime: timeout and auth for every deployment, TLS for the router."""
    mirror: dict[str, int] = field(default_factory=dict)
    """Deployment -> percent of the requests copied to it, its answers dropped."""
    port: int = 0
    """The router's port; 0 picks a free port at create time and keeps it."""


class LocalEndpoint(ScoringService):
    """A service with deployments on this machine: each deployment the scoring runtime on a loopback
    port of its own, with the service's keys; the service's URI a router (serving/router.py) on the
    service's port that splits the traffic between them. The split is the router's input alone, so
    changing it updates that one resource; a deployment is ready before the router is told of it."""

    log_paths: dict[str, str]
    """Each deployment's runtime log, and the router's under `router`."""

    def __init__(self, name: str, args: LocalEndpointArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(f"{TOKEN_PREFIX}:LocalEndpoint", name, None, opts)
        runtime = args.runtime
        given: Any = None
        if runtime.auth_enabled:
            keys = ServiceKeys(f"{name}-keys", name, opts=pulumi.ResourceOptions(parent=self))
            given = pulumi.Output.secret(pulumi.Output.all(keys.primary_key, keys.secondary_key))
            self.primary_key = pulumi.Output.secret(keys.primary_key)
            self.secondary_key = pulumi.Output.secret(keys.secondary_key)
        else:
            self.primary_key = self.secondary_key = pulumi.Output.secret("")
        # The deployments speak plain HTTP on loopback; TLS is the router's, on the service's port.
        process_inputs = runtime.process_inputs()
        tls = {k: process_inputs.pop(k) for k in ("tls_cert_pem", "tls_key_pem") if k in process_inputs}
        inputs = process_inputs
        ports: list[pulumi.Output[Any]] = []
        self.log_paths = {}
        for d in args.deployments:
            service = f"{name}-{d.name}"
            process = ServiceProcess(
                service,
                {"service": service, "bundle": d.bundle_path, "python": d.python, "model_dir": d.model_dir,
                 "log_dir": args.log_dir, "port": 0, **inputs, "workers": d.workers,
                 **({"keys_given": given} if given is not None else {})},
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=[*SECRET_OUTPUTS, "keys_given"]),
            )
            ports.append(process.bound_port)
            self.log_paths[d.name] = str(log_path(args.log_dir, service))
        routes = pulumi.Output.all(*ports).apply(lambda bound: [
            {"name": d.name, "port": port, "traffic": d.traffic} for d, port in zip(args.deployments, bound)])
        router = TrafficRouter(
            f"{name}-traffic",
            {"service": name, "port": args.port, "log_dir": args.log_dir, "python": sys.executable,
             "runtime_root": str(ROUTER_SOURCE.parents[1]),
             # A new router (from an upgraded ml-deploy) replaces the running one; nothing else restarts it.
             "runtime_digest": hashlib.sha256(ROUTER_SOURCE.read_bytes()).hexdigest()[:16],
             "timeout_ms": runtime.timeout_ms, "routes": routes, "mirror": dict(args.mirror),
             **tls},
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["tls_key_pem"]),
        )
        self.log_paths["router"] = str(log_path(args.log_dir, name))
        self.scoring_uri = router.scoring_uri
        self.swagger_uri = router.swagger_uri
        self.register_service_outputs()
