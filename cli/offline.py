"""Run the program under Pulumi's mocks and record every resource it registers.

This is how the graph is reviewed without cloud credentials (`python -m infra.plan`) and how the
tests check it: the real program (`infra/__main__.py`) runs unchanged, only the engine is mocked.
"""

from __future__ import annotations

import hashlib
import json
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

import pulumi
import yaml
from google.protobuf import struct_pb2
from pulumi.runtime import rpc, settings
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from cli.render import number
from infra import targets
from infra.deploy import MockResource
from infra.schema import PROJECT, PROJECT_ROOT

PROGRAM = PROJECT_ROOT / "infra" / "__main__.py"
MOCK_SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
MOCK_TENANT = "11111111-1111-1111-1111-111111111111"
SECRET_PLACEHOLDER = "[secret]"


@dataclass
class Recorded:
    """One registered resource as the engine would have received it."""

    urn: str
    type: str
    name: str
    parent: Optional[str]
    custom: bool
    protect: bool
    inputs: dict[str, Any]
    """Inputs with secrets unwrapped; `secret_paths` says which were secret."""
    secret_paths: set[str] = field(default_factory=set)
    dependencies: list[str] = field(default_factory=list)
    id: Optional[str] = None
    delete_before_replace: bool = False
    replace_on_changes: list[str] = field(default_factory=list)
    ignore_changes: list[str] = field(default_factory=list)
    retain_on_delete: bool = False
    outputs: dict[str, Any] = field(default_factory=dict)
    """The state the mocks answered with (inputs plus computed outputs)."""
    aliases: list[str] = field(default_factory=list)
    """The URNs the resource had before (its aliases, resolved): state under them is this resource."""


@dataclass
class Recording:
    """Everything one program run registered, in registration order, and its stack outputs."""

    resources: list[Recorded]
    outputs: dict[str, Any]
    output_secret_paths: set[str]
    reads: list[Recorded] = field(default_factory=list)
    """What the program read without managing it (StackReferences), in order."""

    def of_type(self, type_: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == type_]

    def by_name(self, type_: str, name: str) -> Recorded:
        matches = [r for r in self.resources if r.type == type_ and r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources of type {type_} named {name}")
        return matches[0]

    def by_urn(self, urn: str) -> Recorded:
        return next(r for r in self.resources if r.urn == urn)

    def ancestors(self, resource: Recorded) -> list[Recorded]:
        chain: list[Recorded] = []
        parent = resource.parent
        while parent:
            found = [r for r in self.resources if r.urn == parent]
            if not found:
                break
            chain.append(found[0])
            parent = found[0].parent
        return chain


def _plain(value: Any, path: str, secrets: set[str]) -> Any:
    """A deserialized value with secrets unwrapped (recorded at their own path) and assets hashed."""
    if rpc.is_rpc_secret(value):
        secrets.add(path)
        return _plain(rpc.unwrap_rpc_secret(value), path, secrets)
    if isinstance(value, dict):
        return {k: _plain(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    if isinstance(value, float):
        return number(value)
    if isinstance(value, pulumi.FileAsset):
        # The engine diffs assets by content hash, so the recording does too.
        source = Path(str(value.path))
        return {"fileAsset": str(source), "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}
    if isinstance(value, pulumi.StringAsset):
        return {"stringAsset": str(value.text), "sha256": hashlib.sha256(str(value.text).encode()).hexdigest()}
    return value


def _decode(value: Any, path: str, secrets: set[str]) -> Any:
    """A registration's wire value as plain data, each secret recorded at exactly its own path.

    `rpc.deserialize_properties` pushes a nested secret up to the top-level property that holds
    it (a container group whose one env var is secret comes back as an all-secret `containers`);
    the engine keeps secrets where the program put them, so the plan hides only those values.
    """
    if isinstance(value, struct_pb2.Struct):
        sig = value[rpc._special_sig_key] if rpc._special_sig_key in value else None
        if sig == rpc._special_secret_sig:
            secrets.add(path)
            return _decode(value["value"], path, secrets) if "value" in value else None
        if sig is not None:  # assets, archives, resource references: one value
            return _plain(rpc.deserialize_property(value), path, secrets)
        out = {}
        for key, item in value.items():
            decoded = _decode(item, f"{path}.{key}" if path else key, secrets)
            if decoded is not None:  # absent and null are the same input
                out[key] = decoded
        return out
    if isinstance(value, struct_pb2.ListValue):
        return [_decode(item, f"{path}[{i}]", secrets) for i, item in enumerate(value)]
    return _plain(rpc.deserialize_property(value), path, secrets)


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


class AzureMocks(pulumi.runtime.Mocks):
    """Answers the program's registrations and invokes with plausible Azure values.

    Computed outputs are derived from inputs (a registry's login server from its name, a container
    group's FQDN from its DNS label) so that what the program builds from them reads as it would
    in a real deployment.
    """

    def __init__(self, location: str = "westeurope", stack_outputs: Optional[Mapping[str, dict[str, Any]]] = None):
        self.location = location
        self.stack_outputs = dict(stack_outputs or {})
        """What a StackReference reads, by fully qualified stack name."""
        # What each target answers for the resources and invokes it owns (infra/targets/).
        self.resource_hooks: dict[str, Callable[[MockResource], None]] = {}
        self.call_hooks: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {}
        for target in targets.registry().values():
            self.resource_hooks.update(target.mock_resources)
            self.call_hooks.update(target.mock_calls)

    def new_resource(self, args: MockResourceArgs) -> tuple[Optional[str], dict]:
        state = dict(args.inputs)
        t = args.typ
        if t == "pulumi:pulumi:StackReference":
            name = str(state.get("name"))
            if name not in self.stack_outputs:
                raise KeyError(f"no outputs for the stack reference {name!r} under the mocks "
                               f"(known: {', '.join(self.stack_outputs) or 'none'})")
            return name, {"name": name, "outputs": self.stack_outputs[name], "secret_output_names": []}
        name_keys = (
            "resourceGroupName" if t.endswith(":ResourceGroup") else None,
            "accountName" if t.endswith(":StorageAccount") else None,
            # Children of a registry name themselves before the registry they belong to.
            "scopeMapName", "tokenName",
            "containerName", "vaultName", "registryName", "workspaceName", "resourceName",
            "containerGroupName", "blobName", "name",
        )
        metadata: dict[str, Any] = state["metadata"] if isinstance(state.get("metadata"), dict) else {}
        physical = next((state[k] for k in name_keys if k and isinstance(state.get(k), str)), None) \
            or metadata.get("name") or args.name
        state.setdefault("name", physical)
        state.setdefault("location", self.location)
        identity = state.get("identity")
        if isinstance(identity, dict) and isinstance(identity.get("userAssignedIdentities"), list):
            # Azure-native takes user-assigned identities as a list of ids and answers with a map.
            state["identity"] = dict(identity, userAssignedIdentities={
                i: {"principalId": _short_hash("principal", i)[:32], "clientId": _short_hash("client", i)[:32]}
                for i in identity["userAssignedIdentities"]
            })
        if t == "azure-native:storage:StorageAccount":
            state["primaryEndpoints"] = {"blob": f"https://{physical}.blob.core.windows.net/"}
        elif t == "azure-native:containerregistry:Registry":
            state["loginServer"] = f"{physical.lower()}.azurecr.io"
        elif t == "azure-native:applicationinsights:Component":
            key = _short_hash(physical)[:32]
            state["connectionString"] = f"InstrumentationKey={key};IngestionEndpoint=https://{self.location}.in.applicationinsights.azure.com/"
            state["instrumentationKey"] = key
        elif t == "azure-native:managedidentity:UserAssignedIdentity":
            state["principalId"] = _short_hash("principal", physical)[:32]
            state["clientId"] = _short_hash("client", physical)[:32]
        elif t == "random:index/randomPassword:RandomPassword":
            state["result"] = _short_hash("password", args.name)[: int(state.get("length", 32))]
        elif t == "docker-build:index:Image":
            # The pushed manifest's digest stands in as a hash of what was built and where it went:
            # the tags, which carry the content tag. Not the context's absolute folder, which differs
            # between checkouts of the same commit (the plan diff's base is a temporary one).
            tags = [str(tag) for tag in state.get("tags") or []]
            digest = "sha256:" + _short_hash("digest", *tags)
            state["digest"] = digest if state.get("push") else ""
            state["ref"] = f"{tags[0]}@{digest}" if tags and state.get("push") else (tags[0] if tags else "")
            state["contextHash"] = _short_hash("context", *tags)
        hook = self.resource_hooks.get(t)
        if hook is not None:
            hook(MockResource(type=t, name=physical, location=self.location, state=state))
        resource_id = (
            f"/subscriptions/{MOCK_SUBSCRIPTION}/resourceGroups/mock/providers/{t}/{physical}"
            if args.custom
            else None
        )
        if resource_id and t.endswith("Version") and isinstance(state.get("version"), str):
            # A versioned asset's id names its version (`.../environments/<name>/versions/<version>`).
            resource_id += f"/versions/{state['version']}"
        return resource_id or f"{args.name}_id", state

    def call(self, args: MockCallArgs) -> tuple[dict, Optional[list[tuple[str, str]]]]:
        if args.token == "azure-native:authorization:getClientConfig":
            return {
                "clientId": "22222222-2222-2222-2222-222222222222",
                "objectId": "33333333-3333-3333-3333-333333333333",
                "subscriptionId": MOCK_SUBSCRIPTION,
                "tenantId": MOCK_TENANT,
            }, []
        hook = self.call_hooks.get(args.token)
        if hook is not None:
            return hook(dict(args.args), self.location), []
        return {}, []


class RecordingMonitor(MockMonitor):
    """The standard mock monitor, also keeping what each registration asked for."""

    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.recorded: list[Recorded] = []
        self.reads: list[Recorded] = []

    def ReadResource(self, request):  # noqa: N802 - the gRPC method name
        response = super().ReadResource(request)
        self.reads.append(Recorded(
            urn=response.urn, type=request.type, name=request.name, parent=request.parent or None, custom=True,
            protect=False, inputs=rpc.deserialize_properties(request.properties), id=request.id or None,
            outputs=self.resources[response.urn].state,
        ))
        return response

    def RegisterResource(self, request):  # noqa: N802 - the gRPC method name
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        secrets: set[str] = set()
        inputs = _decode(request.object, "", secrets)
        self.recorded.append(
            Recorded(
                urn=response.urn,
                type=request.type,
                name=request.name,
                parent=request.parent or None,
                custom=bool(request.custom),
                protect=bool(request.protect),
                inputs=inputs,
                secret_paths=secrets,
                dependencies=list(request.dependencies),
                id=response.id or None,
                delete_before_replace=bool(request.deleteBeforeReplace),
                replace_on_changes=list(request.replaceOnChanges),
                ignore_changes=list(request.ignoreChanges),
                retain_on_delete=bool(request.retainOnDelete),
                outputs=self.resources[response.urn].state,
                aliases=[_alias_urn(alias, request, response.urn) for alias in request.aliases],
            )
        )
        return response


def _alias_urn(alias: Any, request: Any, urn: str) -> str:
    """The URN an alias names, as the engine resolves it (a spec's blanks are the resource's own)."""
    if alias.HasField("urn"):
        return alias.urn
    spec = alias.spec
    # urn:pulumi:<stack>::<project>::<parent types>$<type>::<name>
    stack, project = urn[len("urn:pulumi:"):].split("::")[:2]
    type_ = spec.type or request.type
    parent = "" if spec.noParent else (spec.parentUrn or request.parent)
    chain = f"{parent.split('::')[2]}${type_}" if parent else type_
    return engine_urn(f"urn:pulumi:{spec.stack or stack}::{spec.project or project}::{chain}::{spec.name or request.name}")


def engine_urn(urn: str) -> str:
    """A URN as the engine writes it: the stack's own type is not part of a type chain, where the
    mocks put it at the head of a top-level resource's (`pulumi:pulumi:Stack$...`)."""
    return urn.replace("::pulumi:pulumi:Stack$", "::")


def stack_config(stack: str, root: Path = PROJECT_ROOT) -> dict[str, str]:
    """The config of `Pulumi.<stack>.yaml` as the engine hands it to a program (objects as JSON)."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no stack config {path.name} in {root}")
    with path.open() as f:  # a YAML error then names the file
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict) or not isinstance(data.get("config") or {}, dict):
        raise ValueError(f"{path.name}: expected a mapping with a `config:` mapping")
    return config_values(data.get("config") or {})


def _stand_in_secrets(value: Any) -> Any:
    """A value with each nested `{secure: ...}` replaced by a stand-in the mocks can use: the
    ciphertext cannot be read without the stack's key, and each secret stays distinct."""
    if isinstance(value, dict) and set(value) == {"secure"}:
        return f"{SECRET_PLACEHOLDER} {_short_hash(str(value['secure']))[:16]}"
    if isinstance(value, dict):
        return {k: _stand_in_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stand_in_secrets(v) for v in value]
    return value


def config_values(config: dict[str, Any]) -> dict[str, str]:
    """Flatten a stack file's `config:` map into the engine's key -> string form."""
    values: dict[str, str] = {}
    for key, value in config.items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            values[full] = SECRET_PLACEHOLDER  # ciphertext cannot be read without the stack's key
        elif isinstance(value, str):
            values[full] = value
        else:
            values[full] = json.dumps(_stand_in_secrets(value))
    return values


async def _resolve(value: Any, path: str, secrets: set[str]) -> Any:
    if isinstance(value, pulumi.Output):
        if await value.is_secret():
            secrets.add(path)
        return await _resolve(await value.future(), path, secrets)
    if isinstance(value, dict):
        return {k: await _resolve(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [await _resolve(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    return value


def source_outputs(config: Mapping[str, str], root: Path = PROJECT_ROOT,
                   chain: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    """What the StackReference of a promoted stack reads under the mocks: the outputs of the offline
    plan of the stack it promotes from (`Pulumi.<source>.yaml` in `root`), and so on up the chain.
    Empty for a stack that promotes from nothing."""
    from infra.promotion import reference_name

    source = config.get(f"{PROJECT}:promote_from")
    if not source or chain[-1:] == (source,):  # none, or itself: config validation says so
        return {}
    if source in chain:
        raise ValueError(f"promotion cycle: {' -> '.join((*chain, source))}")
    values = stack_config(source, root)
    upstream = source_outputs(values, root, (*chain, source))
    return {**upstream, reference_name(source): run(values, stack=source, stack_outputs=upstream).outputs}


def run(config: dict[str, str], *, stack: str = "dev", preview: bool = False,
        stack_outputs: Optional[Mapping[str, dict[str, Any]]] = None) -> Recording:
    """Run `infra/__main__.py` under the mocks with `config` and return what it registered.

    `stack_outputs` answers StackReferences by fully qualified stack name; by default a promoted
    stack reads the offline plan of the stack it promotes from (`source_outputs`). Exceptions the
    program raises (a ConfigError, say) propagate after the runtime settles.
    """
    if stack_outputs is None:
        stack_outputs = source_outputs(config, chain=(stack,))
    location = config.get("azure-native:location", "westeurope")
    mocks = AzureMocks(location=location, stack_outputs=stack_outputs)
    monitor = RecordingMonitor(mocks)
    # A fresh runtime each run: several runs in one process (diff checks) must not share a stack.
    settings.reset_options(project=PROJECT, stack=stack, preview=preview)
    pulumi.runtime.set_all_config(config, [k for k, v in config.items() if v == SECRET_PLACEHOLDER])
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    # Leftovers of an earlier run in this process would be awaited by this one.
    runtime_state: Any = settings.SETTINGS
    runtime_state.rpc_manager.clear()
    runtime_state.outputs.clear()

    def program() -> None:
        runpy.run_path(str(PROGRAM), run_name="__main__")

    _sync_await(run_pulumi_func(program))

    root = settings.get_root_resource()
    exported: dict[str, Any] = dict(getattr(root, "outputs", {}) or {})
    secrets: set[str] = set()
    outputs = _sync_await(_resolve(exported, "", secrets))
    return Recording(resources=monitor.recorded, outputs=outputs, output_secret_paths=secrets, reads=monitor.reads)
