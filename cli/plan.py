"""`ml-deploy plan`: print the resource tree a stack's config registers, computed offline under Pulumi's mocks.

    ./ml-deploy plan [--stack dev] [--json]

Not a `pulumi preview`: nothing is compared with any cloud state, and computed values (ids,
endpoints, keys) are the mocks' stand-ins.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cli import offline
from infra.config import ConfigError
from cli.offline import Recorded, Recording

# Inputs that say little in a review (they repeat the parent's wiring or are long blobs).
_QUIET = {"resourceGroupName", "__defaults", "source", "__provider"}
_MAX_VALUE = 110


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def render(recording: Recording, stack: str) -> str:
    """The recording as an indented tree, secrets hidden."""
    lines = [
        f"Offline plan for stack '{stack}': {len(recording.resources)} resources.",
        "Computed under Pulumi's mocks; NOT compared with any cloud state (run `pulumi preview` for that).",
        "",
    ]
    children: dict[str | None, list[Recorded]] = {}
    urns = {r.urn for r in recording.resources}
    for r in recording.resources:
        parent = r.parent if r.parent in urns else None
        children.setdefault(parent, []).append(r)

    def walk(parent: str | None, depth: int) -> None:
        for r in children.get(parent, []):
            flags = [f for f, on in (("protect", r.protect), ("retain", r.retain_on_delete)) if on]
            lines.append(f"{'  ' * depth}+ {r.type}  {r.name}" + (f"  [{', '.join(flags)}]" if flags else ""))
            if r.custom:
                for key in sorted(r.inputs):
                    if key in _QUIET:
                        continue
                    shown = "[secret]" if key in r.secret_paths else _value(r.inputs[key])
                    lines.append(f"{'  ' * (depth + 2)}{key}: {shown}")
            walk(r.urn, depth + 1)

    walk(None, 0)
    lines.append("")
    lines.append("Stack outputs:")
    for line in json.dumps(_hide(recording.outputs, recording.output_secret_paths, ""), indent=2).splitlines():
        lines.append("  " + line)
    return "\n".join(lines)


def _hide(value: Any, secrets: set[str], path: str) -> Any:
    if path in secrets:
        return "[secret]"
    if isinstance(value, dict):
        return {k: _hide(v, secrets, f"{path}.{k}" if path else k) for k, v in value.items()}
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ml-deploy plan", description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--stack", default="dev", help="reads Pulumi.<stack>.yaml (default: dev)")
    parser.add_argument("--json", action="store_true", help="print the recorded resources as JSON")
    args = parser.parse_args(argv)
    try:
        recording = offline.run(offline.stack_config(args.stack), stack=args.stack)
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([
            {"type": r.type, "name": r.name, "parent": r.parent, "protect": r.protect,
             "inputs": _hide(r.inputs, r.secret_paths, "")} for r in recording.resources
        ], indent=2))
    else:
        print(render(recording, args.stack))
    return 0


if __name__ == "__main__":
    sys.exit(main())
