"""Writes cli/azure_native_replacements.json: what the installed pulumi_azure_native SDK says about each
azure-native type this program registers, for cli/replacements.py's replace rules.

    .venv/bin/python -m cli.replacements_generate      # after changing the pulumi-azure-native pin

The provider's own metadata (`forceNew` per property, the PUT path) ships only inside its plugin
binary, which is not installed here, so it is not read. From the Python SDK this records, per type:

- `api_version`: the REST API version the SDK's resource uses (its constructors' docstring, "Uses
  Azure REST API version ..."), which is what the hand-kept spec facts in cli/replacements.py are checked against;
- `path_parameters`: the resource's REST path parameters, by SDK name: the parameters of its `get_*`
  function (the GET shares the PUT's path) that are also inputs of the resource; the others are query
  parameters (`expand`, `tenantId`) and are listed under `get_only_parameters`;
- `location`: whether the resource takes a `location` input (a tracked resource).

The types are every `azure-native:` type in the offline plans of the committed stacks, plus those
cli/replacements.py keeps hand rules for.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from cli import replacements

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "azure-native:"
_API_VERSION = re.compile(r"Uses Azure REST API version (\S+?)\.(?:\s|$)")
_GET_ARG = re.compile(r"__args__\['(\w+)'\]")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _inputs(args_cls: type) -> set[str]:
    """The SDK names (camelCase, as the engine sees them) of a resource's inputs."""
    # Each property of an `*Args` input type is a `@pulumi.getter(name=...)`, which keeps the wire name.
    return {getattr(prop.fget, "_pulumi_name", name) for name, prop in vars(args_cls).items()
            if isinstance(prop, property)}


def sdk_facts(type_: str) -> dict[str, Any]:
    """What the installed SDK says about `type_` (an `azure-native:<module>:<Name>` token)."""
    _, module, name = type_.split(":")
    sdk = importlib.import_module(f"pulumi_azure_native.{module}")
    resource = getattr(sdk, name)
    inputs = _inputs(getattr(sdk, f"{name}Args"))
    version = _API_VERSION.search(inspect.getsource(resource))  # in the constructors' docstrings
    get = getattr(sdk, f"get_{_snake(name)}", None)
    get_args = sorted(set(_GET_ARG.findall(inspect.getsource(get)))) if get is not None else None
    return {
        "api_version": version.group(1) if version else None,
        "path_parameters": None if get_args is None else [a for a in get_args if a in inputs],
        "get_only_parameters": None if get_args is None else [a for a in get_args if a not in inputs],
        "location": "location" in inputs,
    }


def registered_types() -> list[str]:
    """Every azure-native resource type in the committed stacks' offline plans and in the hand tables."""
    from cli import diff, offline  # the program's plans; imported here so cli.replacements stays light

    types = set(replacements.hand_kept_types())
    for stack in diff.committed_stacks(ROOT):
        recording = offline.run(offline.stack_config(stack), stack=stack)
        types |= {r.type for r in recording.resources if r.type.startswith(PREFIX)}
    return sorted(types)


def generate(types: list[str]) -> dict[str, Any]:
    return {
        "generated_by": "python -m cli.replacements_generate",
        "source": "the installed pulumi_azure_native SDK: each resource's docstring (API version), "
                  "its *Args input type and its get_* function",
        "pulumi_azure_native": metadata.version("pulumi_azure_native"),
        "types": {t: sdk_facts(t) for t in types},
    }


def main() -> int:
    data = generate(registered_types())
    replacements.DATA_FILE.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    print(f"wrote {replacements.DATA_FILE.relative_to(ROOT)}: {len(data['types'])} types, "
          f"pulumi_azure_native {data['pulumi_azure_native']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
