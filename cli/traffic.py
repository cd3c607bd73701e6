"""`ml-deploy traffic`: change a service's traffic split in its stack config, and show what that does.

    ./ml-deploy traffic --stack dev --service churn blue=0 green=100
    ./ml-deploy traffic --stack dev --service churn blue=100 green=0 --mirror green=10
    ./ml-deploy traffic --stack dev --service churn --mirror none --dry-run

Rewrites the `traffic` of the named deployments (and with `--mirror`, the service's
`mirror_traffic`) in `Pulumi.<stack>.yaml`, every other byte of the file as it was, checks the new
config (shares summing to 100, the mirror rules), and prints the offline plan diff of the change:
the split's own resource, and nothing else. Review and commit the file, then `pulumi up`, as after
`ml-deploy promote`. Deployments not named keep their share.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import sys
from pathlib import Path
from typing import Any, Optional

import yaml

from cli import errors, offline
from cli.errors import CliError
from infra import config
from infra.schema import PROJECT, PROJECT_ROOT

SERVICES = f"{PROJECT}:services"
_SHARE = re.compile(r"^([a-z][a-z0-9-]*)=([0-9]{1,3})$")


class TrafficError(CliError):
    """The split cannot be changed as asked; the message says why."""


def parse_shares(items: list[str], what: str) -> dict[str, int]:
    """`name=percent` arguments as a map; `none` (for the mirror) as an empty one."""
    if items == ["none"]:
        return {}
    shares: dict[str, int] = {}
    for item in items:
        match = _SHARE.match(item)
        if match is None:
            raise TrafficError(f"{what}: {item!r} is not <deployment>=<percent> (e.g. green=10)")
        if match.group(1) in shares:
            raise TrafficError(f"{what}: {match.group(1)!r} is given twice")
        shares[match.group(1)] = int(match.group(2))
    return shares


def _key(mapping: yaml.MappingNode, name: str) -> Optional[tuple[yaml.Node, yaml.Node]]:
    return next(((k, v) for k, v in mapping.value if isinstance(k, yaml.ScalarNode) and k.value == name), None)


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def edit(text: str, service: str, traffic: dict[str, int], mirror: Optional[dict[str, int]]) -> str:
    """The stack file `text` with the service's shares (and mirror, unless None) set; the rest kept."""
    root = yaml.compose(text)
    found = _key(root, "config") if isinstance(root, yaml.MappingNode) else None
    services = _key(found[1], SERVICES) if found and isinstance(found[1], yaml.MappingNode) else None
    if services is None or not isinstance(services[1], yaml.SequenceNode):
        raise TrafficError(f"the stack config has no {SERVICES} list")
    entry = next((s for s in services[1].value if isinstance(s, yaml.MappingNode)
                  and (n := _key(s, "name")) is not None and n[1].value == service), None)
    if entry is None:
        names = [n[1].value for s in services[1].value if isinstance(s, yaml.MappingNode) and (n := _key(s, "name"))]
        raise TrafficError(f"no service {service!r} in {SERVICES} (services: {', '.join(names) or 'none'})")
    deployments = _key(entry, "deployments")
    if deployments is None or not isinstance(deployments[1], yaml.SequenceNode):
        raise TrafficError(f"service {service!r} has no deployments to split traffic between: declare them first "
                           "(name, image and traffic each)")
    nl = "\r\n" if "\r\n" in text else "\n"  # the file's own line ends
    edits: list[tuple[int, int, str]] = []  # (start, end, replacement), applied from the end
    by_name = {n[1].value: d for d in deployments[1].value if isinstance(d, yaml.MappingNode) and (n := _key(d, "name"))}
    unknown = sorted(set(traffic) - set(by_name))
    if unknown:
        raise TrafficError(f"service {service!r} has no deployment {unknown[0]!r} (deployments: {', '.join(by_name)})")
    for name, share in traffic.items():
        node = by_name[name]
        current = _key(node, "traffic")
        if current is not None:
            edits.append((current[1].start_mark.index, current[1].end_mark.index, str(share)))
        elif node.flow_style:
            close = text.rindex("}", 0, node.end_mark.index)
            edits.append((close, close, f", traffic: {share}"))
        else:
            name_key = _key(node, "name")
            assert name_key is not None
            after = text.index("\n", name_key[1].end_mark.index) + 1
            edits.append((after, after, " " * name_key[0].start_mark.column + f"traffic: {share}{nl}"))
    if mirror is not None:
        value = "{" + ", ".join(f"{k}: {v}" for k, v in mirror.items()) + "}"
        current = _key(entry, "mirror_traffic")
        if current is not None and isinstance(current[1], yaml.MappingNode) and not current[1].flow_style \
                and current[1].value:
            # A block mapping ends where the next key's line starts: replace from the colon to there.
            colon = text.index(":", current[0].end_mark.index) + 1
            end = _line_start(text, current[1].end_mark.index)
            edits.append((colon, end, f" {value}{nl}"))
        elif current is not None:
            edits.append((current[1].start_mark.index, current[1].end_mark.index, value))
        elif mirror:
            key = deployments[0]
            at = _line_start(text, key.start_mark.index)
            edits.append((at, at, " " * key.start_mark.column + f"mirror_traffic: {value}{nl}"))
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def expected(data: dict[str, Any], service: str, traffic: dict[str, int], mirror: Optional[dict[str, int]]) -> dict[str, Any]:
    """What the stack file must parse to after the edit: the same, with the shares changed."""
    result = copy.deepcopy(data)
    svc = next(s for s in result["config"][SERVICES] if s.get("name") == service)
    for d in svc["deployments"]:
        if d.get("name") in traffic:
            d["traffic"] = traffic[d["name"]]
    if mirror is not None and (mirror or "mirror_traffic" in svc):
        svc["mirror_traffic"] = dict(mirror)
    return result


def plan_diff(stack: str, old: dict[str, Any], new: dict[str, Any]) -> str:
    """The offline plan diff from the stack's config `old` to `new` (the `config:` maps)."""
    from cli import diff

    before = diff.as_records(offline.run(offline.config_values(old), stack=stack))
    after = diff.as_records(offline.run(offline.config_values(new), stack=stack))
    return diff.render_text([diff.compare_resources(before, after, stack)], f"Pulumi.{stack}.yaml",
                            f"Pulumi.{stack}.yaml with the new split")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ml-deploy traffic", description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--stack", required=True, help="the stack whose config to change (Pulumi.<stack>.yaml)")
    parser.add_argument("--service", required=True, help="the service with deployments")
    parser.add_argument("shares", nargs="*", metavar="DEPLOYMENT=PERCENT", help="the new live traffic shares")
    parser.add_argument("--mirror", nargs="+", metavar="DEPLOYMENT=PERCENT",
                        help="the mirrored share (`none` to stop mirroring)")
    parser.add_argument("--dry-run", action="store_true", help="show the change and its plan diff; write nothing")
    errors.add_debug_flag(parser)
    args = parser.parse_args(argv)
    path = PROJECT_ROOT / f"Pulumi.{args.stack}.yaml"
    with errors.one_line("ml-deploy traffic", args.debug):
        traffic = parse_shares(args.shares, "shares")
        mirror = parse_shares(args.mirror, "--mirror") if args.mirror is not None else None
        if not traffic and mirror is None:
            raise TrafficError("nothing to change: give shares (blue=0 green=100) or --mirror")
        if not path.exists():
            raise TrafficError(f"no stack config {path.name}")
        with path.open(newline="") as f:  # line ends kept as they are
            text = f.read()
        data = yaml.safe_load(text) or {}
        new_text = edit(text, args.service, traffic, mirror)
        new_data = yaml.safe_load(new_text)
        if new_data != expected(data, args.service, traffic, mirror):
            raise TrafficError(f"could not edit {path.name} safely (unusual layout); set the shares by hand")
        # The new split is checked as `pulumi up` would check it, before anything is written.
        config.parse(config.project_values(offline.config_values(new_data.get("config") or {})), stack=args.stack)
        report = plan_diff(args.stack, data.get("config") or {}, new_data.get("config") or {})
    print(report, end="")
    if args.dry_run:
        print(f"\n--dry-run: {path.name} left as it is.")
        return 0
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    with partial.open("w", newline="") as f:
        f.write(new_text)
    partial.replace(path)
    print(f"\nWrote the new split to {path.name}: review and commit it, then `pulumi up --stack {args.stack}`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
