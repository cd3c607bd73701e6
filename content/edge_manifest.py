"""IoT Edge deployment manifests: the `$edgeAgent` and `$edgeHub` desired properties (schema 1.1)
that run scoring modules on an edge device, with each module's Docker create options minified and
split into the 512-character chunks the edge agent joins again.

Plain data in, plain data out: nothing here knows about Pulumi or an Azure SDK. The tests validate
what this builds against the official JSON Schemas (schemas/iot-edge/); `problems` holds the checks
those schemas cannot express.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

# IoT Edge 1.6 LTS succeeds 1.5 LTS (serviced until 2026-11-10) and is serviced until 2028-11-14
# (github.com/Azure/azure-iotedge/releases/tag/1.6.0). Deployments point the runtime modules at the
# minor-version tags, `mcr.microsoft.com/azureiotedge-agent:1.6` and `...-hub:1.6`, which follow
# the release's patches (Microsoft IoT blog, "Azure IoT Edge 1.6 LTS is now available").
EDGE_RELEASE = "1.6"
AGENT_IMAGE = f"mcr.microsoft.com/azureiotedge-agent:{EDGE_RELEASE}"
HUB_IMAGE = f"mcr.microsoft.com/azureiotedge-hub:{EDGE_RELEASE}"
SCHEMA_VERSION = "1.1"
"""Of both `$edgeAgent` and `$edgeHub` desired properties."""

# The edge agent reads `createOptions`, then `createOptions01`, `createOptions02`, ... and joins
# them. Microsoft's IoT Edge dev tool splits at 512 characters and refuses more than 8 chunks
# (github.com/Azure/iotedgedev iotedgedev/deploymentmanifest.py: TWIN_VALUE_MAX_SIZE = 512,
# TWIN_VALUE_MAX_CHUNKS = 8).
CHUNK = 512
MAX_CHUNKS = 8
CREATE_OPTIONS = "createOptions"

# The host ports every edgeHub binds (learn.microsoft.com/azure/iot-edge/how-to-use-create-options):
# AMQP 5671, MQTT 8883, and 443 for AMQP/MQTT over WebSockets.
HUB_PORTS = (5671, 8883, 443)
HUB_CREATE_OPTIONS: dict[str, Any] = {
    "HostConfig": {"PortBindings": {f"{p}/tcp": [{"HostPort": str(p)}] for p in HUB_PORTS}}
}
# How long edgeHub keeps messages it cannot deliver upstream: 2 hours, the value the SchemaStore
# schema gives as its example (schemas/iot-edge/azure-iot-edgehub-deployment-1.1.json).
STORE_AND_FORWARD_TTL_SECS = 7200

SYSTEM_MODULES = ("edgeAgent", "edgeHub")
# The schemas' own patterns: keys of registry credentials and routes (twin keys must not contain
# `.`, `$`, `#` or a space).
TWIN_KEY = re.compile(r"^[^.$# ]+$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ManifestError(ValueError):
    """A manifest cannot be built; the message names the config path at fault."""


@dataclass(frozen=True)
class RegistryCredential:
    """Credentials the edge agent uses to pull from one registry."""

    address: str
    """The registry's login server, e.g. `<name>.azurecr.io`."""
    username: str
    password: str


@dataclass(frozen=True)
class Module:
    """One custom module: a container the edge agent keeps running."""

    name: str
    image: str
    container_port: int
    """The port the container listens on."""
    host_port: int
    """The device port bound to it."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Environment variables in the Docker create options (public: they decide the chunking)."""
    secret_env: Mapping[str, str] = field(default_factory=dict)
    """Environment variables in the module's `env` section (auth keys, connection strings)."""
    restart_policy: str = "always"
    where: str = "module"
    """The config path errors name (`services[2]`)."""


def create_options(module: Module) -> dict[str, Any]:
    """The module's Docker create options: its environment and the one port it publishes."""
    port = f"{module.container_port}/tcp"
    return {
        "Env": [f"{k}={v}" for k, v in sorted(module.env.items())],
        "ExposedPorts": {port: {}},
        "HostConfig": {"PortBindings": {port: [{"HostPort": str(module.host_port)}]}},
    }


def minified(options: Mapping[str, Any]) -> str:
    """Create options as the edge agent receives them: compact JSON, ASCII only, so one character is
    one byte and the 512 limit means the same in both."""
    return json.dumps(options, separators=(",", ":"), sort_keys=True, ensure_ascii=True)


def chunked(options: Mapping[str, Any], where: str) -> dict[str, str]:
    """`{"createOptions": ...}`, or `createOptions` plus `createOptions01`... when the minified
    options are over 512 characters; more than 8 chunks is an error naming `where`."""
    text = minified(options)
    chunks = [text[i:i + CHUNK] for i in range(0, len(text), CHUNK)]
    if len(chunks) > MAX_CHUNKS:
        raise ManifestError(
            f"{where}: the module's createOptions are {len(text)} characters once minified; IoT Edge takes at "
            f"most {CHUNK * MAX_CHUNKS} ({MAX_CHUNKS} chunks of {CHUNK}): use fewer or shorter env values"
        )
    return {chunk_key(i): chunk for i, chunk in enumerate(chunks)}


def chunk_key(index: int) -> str:
    return CREATE_OPTIONS if index == 0 else f"{CREATE_OPTIONS}{index:02d}"


def joined(settings: Mapping[str, Any]) -> str:
    """A module's `settings` create options joined back in the edge agent's order."""
    parts: list[str] = []
    for i in range(MAX_CHUNKS + 1):
        key = chunk_key(i)
        if key not in settings:
            break
        parts.append(str(settings[key]))
    return "".join(parts)


def _module_twin(module: Module) -> dict[str, Any]:
    twin: dict[str, Any] = {
        "version": "1.0",
        "type": "docker",
        "status": "running",
        "restartPolicy": module.restart_policy,
        "settings": {"image": module.image, **chunked(create_options(module), module.where)},
    }
    if module.secret_env:
        twin["env"] = {k: {"value": v} for k, v in sorted(module.secret_env.items())}
    return twin


def deployment(
    modules: Sequence[Module],
    registries: Mapping[str, RegistryCredential],
    routes: Mapping[str, str],
    store_and_forward_ttl_secs: int = STORE_AND_FORWARD_TTL_SECS,
) -> dict[str, Any]:
    """A deployment manifest, `{"modulesContent": {"$edgeAgent": ..., "$edgeHub": ...}}`: the IoT
    Edge runtime at `EDGE_RELEASE`, these modules, the credentials to pull them, edgeHub's routes
    and store-and-forward time. Raises ManifestError when the result would not work on a device."""
    agent = {
        "schemaVersion": SCHEMA_VERSION,
        "runtime": {
            "type": "docker",
            "settings": {
                "registryCredentials": {
                    key: {"address": c.address, "username": c.username, "password": c.password}
                    for key, c in sorted(registries.items())
                },
            },
        },
        "systemModules": {
            "edgeAgent": {"type": "docker", "settings": {"image": AGENT_IMAGE, **chunked({}, "edgeAgent")}},
            "edgeHub": {
                "type": "docker",
                "status": "running",
                "restartPolicy": "always",
                "settings": {"image": HUB_IMAGE, **chunked(HUB_CREATE_OPTIONS, "edgeHub")},
            },
        },
        "modules": {m.name: _module_twin(m) for m in modules},
    }
    hub = {
        "schemaVersion": SCHEMA_VERSION,
        "routes": dict(sorted(routes.items())),
        "storeAndForwardConfiguration": {"timeToLiveSecs": store_and_forward_ttl_secs},
    }
    manifest = {"modulesContent": {"$edgeAgent": {"properties.desired": agent},
                                   "$edgeHub": {"properties.desired": hub}}}
    found = problems(manifest)
    if found:
        where = ", ".join(sorted({m.where for m in modules})) or "manifest"
        raise ManifestError(f"{where}: " + "; ".join(found))
    return manifest


def runtime_only(store_and_forward_ttl_secs: int = STORE_AND_FORWARD_TTL_SECS) -> dict[str, Any]:
    """The manifest of a device that runs the IoT Edge runtime and nothing else: what a device gets
    when the stack stops deploying to it, so that its scoring module is removed."""
    return deployment([], {}, {}, store_and_forward_ttl_secs)


def problems(manifest: Mapping[str, Any]) -> list[str]:
    """What the JSON Schemas cannot see: each module's createOptions chunks are contiguous, each
    within 512 characters and at most 8, and joined they are one JSON object; schema versions are
    exactly 1.1 (the schemas' pattern is unanchored); every custom image's registry has
    credentials; port bindings do not collide on the host."""
    found: list[str] = []
    content = manifest.get("modulesContent", {})
    agent = content.get("$edgeAgent", {}).get("properties.desired", {})
    hub = content.get("$edgeHub", {}).get("properties.desired", {})
    for name, desired in (("$edgeAgent", agent), ("$edgeHub", hub)):
        if desired.get("schemaVersion") != SCHEMA_VERSION:
            found.append(f"{name} schemaVersion is {desired.get('schemaVersion')!r}, not {SCHEMA_VERSION!r}")
    credentials = agent.get("runtime", {}).get("settings", {}).get("registryCredentials", {})
    addresses = {c.get("address") for c in credentials.values()}
    modules = {**agent.get("systemModules", {}), **agent.get("modules", {})}
    host_ports: dict[str, str] = {}
    for name, module in modules.items():
        settings = module.get("settings", {})
        keys = sorted(k for k in settings if k.lower().startswith(CREATE_OPTIONS.lower()))
        expected = [chunk_key(i) for i in range(len(keys))]
        if keys != expected:
            found.append(f"module {name}: createOptions keys {keys} are not {expected}")
            continue
        if len(keys) > MAX_CHUNKS:
            found.append(f"module {name}: {len(keys)} createOptions chunks, at most {MAX_CHUNKS}")
        for key in keys:
            if len(settings[key]) > CHUNK:
                found.append(f"module {name}: {key} is {len(settings[key])} characters, over {CHUNK}")
        if keys:
            try:
                options = json.loads(joined(settings))
            except json.JSONDecodeError as err:
                found.append(f"module {name}: createOptions joined are not JSON ({err})")
                continue
            if not isinstance(options, dict):
                found.append(f"module {name}: createOptions joined are not a JSON object")
                continue
            bindings = options.get("HostConfig", {}).get("PortBindings", {})
            for binding in bindings.values():
                for host in binding:
                    port = str(host.get("HostPort"))
                    if port in host_ports:
                        found.append(f"modules {host_ports[port]} and {name} both bind host port {port}")
                    host_ports.setdefault(port, name)
        if name not in SYSTEM_MODULES:
            registry = str(settings.get("image", "")).split("/", 1)[0]
            if "." in registry and registry != "mcr.microsoft.com" and registry not in addresses:
                found.append(f"module {name}: no registryCredentials for {registry}")
    return found


@dataclass(frozen=True)
class DeployedModule:
    """A custom module of a deployment manifest, as reviews and checks read it back."""

    name: str
    image: str
    options: Optional[Mapping[str, Any]]
    """The Docker create options, joined from their chunks; None when they are not a JSON object."""
    env: Mapping[str, str]
    """The module twin's `env` (where ml-deploy puts the auth keys)."""


def custom_modules(props: Mapping[str, Any]) -> Optional[list[DeployedModule]]:
    """The custom modules (not edgeAgent or edgeHub) of a deployment's manifest, its `content`
    input (JSON text); None when there is no manifest to read."""
    content = props.get("content")
    if isinstance(content, str):
        try:
            content = json.loads(content)
        except json.JSONDecodeError:
            return None
    if not isinstance(content, Mapping):
        return None
    agent = ((content.get("modulesContent") or {}).get("$edgeAgent") or {}).get("properties.desired")
    if not isinstance(agent, Mapping):
        return None
    found = []
    for name, module in (agent.get("modules") or {}).items():
        settings = module.get("settings") or {}
        options: Optional[Mapping[str, Any]] = {}
        if CREATE_OPTIONS in settings:
            try:
                parsed = json.loads(joined(settings))
            except json.JSONDecodeError:
                parsed = None
            options = parsed if isinstance(parsed, Mapping) else None
        env = {str(k): str((v or {}).get("value", "")) for k, v in (module.get("env") or {}).items()
               if isinstance(v, Mapping) or v is None}
        found.append(DeployedModule(str(name), str(settings.get("image") or ""), options, env))
    return found

