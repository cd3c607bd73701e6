"""`ml-deploy plan`: print the resource tree a stack's config registers, computed offline under Pulumi's mocks.

    ./ml-deploy plan [--stack dev] [--json]

Not a `pulumi preview`: nothing is compared with any cloud state, and computed values (ids,
endpoints, keys) are the mocks' stand-ins. The same config prints the same bytes: siblings are
sorted by name and type, keys by name. The policy pack's rules run on the plan; a mandatory
violation makes the command exit 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional

import yaml

from cli import errors, offline, render as show
from cli.offline import Recorded, Recording
from cli.policy import Violation, as_dict, check, render_violations
from infra.schema import OFFLINE_PLAN

# Inputs that say little in a review: the parent's wiring, or the SDK's own bookkeeping.
_QUIET = {"resourceGroupName", "source"} | show.INTERNAL
_INLINE = 100
"""Values whose one-line JSON is at most this long print inline; longer ones as an indented block."""


def _lines(key: str, value: Any, indent: str) -> list[str]:
    text = show.scalar(value)
    if not isinstance(value, (dict, list)) or len(text) <= _INLINE:
        return [f"{indent}{key}: {text}"]
    block = yaml.safe_dump(json.loads(text), sort_keys=True, default_flow_style=False, allow_unicode=True, width=1000)
    return [f"{indent}{key}:"] + [f"{indent}  {line}" for line in block.rstrip("\n").splitlines()]


def ordered(recording: Recording) -> list[tuple[int, Recorded]]:
    """The resources as a tree walk (depth, resource): children after their parent, siblings
    sorted by name then type, so the order never depends on when each registration arrived."""
    children: dict[Optional[str], list[Recorded]] = {}
    urns = {r.urn for r in recording.resources}
    for r in recording.resources:
        children.setdefault(r.parent if r.parent in urns else None, []).append(r)
    out: list[tuple[int, Recorded]] = []

    def walk(parent: Optional[str], depth: int) -> None:
        for r in sorted(children.get(parent, []), key=lambda r: (r.name, r.type, r.urn)):
            out.append((depth, r))
            walk(r.urn, depth + 1)

    walk(None, 0)
    return out


def render(recording: Recording, stack: str, violations: Optional[list[Violation]] = None) -> str:
    """The recording as an indented tree, every input in full but the secret ones."""
    lines = [
        f"Offline plan for stack '{stack}': {len(recording.resources)} resources.",
        "Computed under Pulumi's mocks; NOT compared with any cloud state (run `pulumi preview` for that).",
        "",
    ]
    for depth, r in ordered(recording):
        flags = [f for f, on in (("protect", r.protect), ("retain", r.retain_on_delete)) if on]
        lines.append(f"{'  ' * depth}+ {r.type}  {r.name}" + (f"  [{', '.join(flags)}]" if flags else ""))
        if r.custom:
            inputs = show.hide(r.inputs, r.secret_paths)
            for key in sorted(inputs):
                if key not in _QUIET:
                    lines += _lines(key, inputs[key], "  " * (depth + 2))
    lines.append("")
    lines.append("Stack outputs:")
    hidden = show.hide(recording.outputs, recording.output_secret_paths)
    for line in json.dumps(hidden, indent=2, sort_keys=True).splitlines():
        lines.append("  " + line)
    if violations is not None:
        lines += ["", *render_violations(violations)]
    return "\n".join(lines)


def as_json(recording: Recording, violations: list[Violation]) -> dict[str, Any]:
    """The plan as data: each resource with its URN, inputs (secrets hidden) and which paths are secret."""
    return {
        "resources": [
            {"urn": r.urn, "type": r.type, "name": r.name, "parent": r.parent, "protect": r.protect,
             "inputs": show.hide(r.inputs, r.secret_paths), "secret_paths": sorted(r.secret_paths)}
            for _, r in ordered(recording)
        ],
        "outputs": show.hide(recording.outputs, recording.output_secret_paths),
        "policy": [as_dict(v) for v in violations],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ml-deploy plan", description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--stack", default="dev", help="reads Pulumi.<stack>.yaml (default: dev)")
    parser.add_argument("--json", action="store_true", help="print the recorded resources as JSON")
    errors.add_debug_flag(parser)
    args = parser.parse_args(argv)
    os.environ[OFFLINE_PLAN] = "1"  # machine-local files (a kubeconfig) may be stand-ins here
    with errors.one_line("ml-deploy plan", args.debug):
        recording = offline.run(offline.stack_config(args.stack), stack=args.stack)
        violations = check(recording.resources, args.stack)
    if args.json:
        print(json.dumps(as_json(recording, violations), indent=2, sort_keys=True))
    else:
        print(render(recording, args.stack, violations))
    return 1 if any(v.mandatory for v in violations) else 0


if __name__ == "__main__":
    sys.exit(main())
