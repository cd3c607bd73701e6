"""`ml-deploy promote`: pin what one stack runs (images by digest, model versions) into another stack's config.

    ./ml-deploy promote --from staging --to prod [--dry-run]

Reads the source stack's outputs (`image_digests`, `models`) with the Pulumi CLI, shows what the
target stack would run, old -> new, checks that the target's model files give the same versions,
and writes `ml-deploy:promote_from` and `ml-deploy:promoted` into `Pulumi.<to>.yaml`. Review and
commit that file, then `pulumi up --stack <to>`. Nothing is deployed by this command, and until it
runs again the target keeps running these pins whatever the source stack deploys next.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from cli import offline
from cli import errors
from cli.engine import pulumi_environ
from cli.errors import CliError
from content.model import BundledModel
from infra import config, promotion
from infra.config import ConfigError
from infra.schema import PROJECT, PROJECT_ROOT

PROMOTE_FROM = f"{PROJECT}:promote_from"
PROMOTED = f"{PROJECT}:promoted"
NOT_DEPLOYED = "(not deployed)"


class PromotionError(CliError):
    """The promotion cannot be pinned; the message says why and what to do."""


def read_outputs(stack: str, root: Path = PROJECT_ROOT) -> Optional[dict[str, Any]]:
    """A stack's outputs (secrets masked) read with the Pulumi CLI, or None when it has none."""
    result = subprocess.run(
        ["pulumi", "stack", "output", "--json", "--stack", stack],
        capture_output=True, text=True, env=pulumi_environ(), cwd=root,
    )
    if result.returncode != 0:
        return None
    outputs = json.loads(result.stdout or "null")
    return outputs if isinstance(outputs, dict) and outputs else None


def pins_for(raw: dict[str, Any], source: str, outputs: dict[str, Any]) -> dict[str, Any]:
    """The `ml-deploy:promoted` value for a target whose config is `raw`: the digest of each image it
    declares and the version of each model, from the source stack's outputs."""
    digests, models = outputs.get("image_digests"), outputs.get("models")
    if not isinstance(digests, dict) or not isinstance(models, dict):
        raise PromotionError(
            f"stack {source!r} has no image_digests/models outputs: it was last deployed by a version of "
            f"ml-deploy without promotion; run `pulumi up --stack {source}` first"
        )
    problems: list[str] = []
    images: dict[str, str] = {}
    for i, image in enumerate(raw.get("images") or []):
        name = str(image.get("name")) if isinstance(image, dict) else None
        if name is not None and name in digests:
            images[name] = str(digests[name])
        else:
            problems.append(f"images[{i}]: stack {source!r} runs no image named {name!r} "
                            f"(it runs: {', '.join(sorted(digests)) or 'none'})")
    versions: dict[str, str] = {}
    for i, model in enumerate(raw.get("models") or []):
        name = str(model.get("name")) if isinstance(model, dict) else None
        version = (models.get(name) or {}).get("version") if name is not None and name in models else None
        if name is not None and version:
            versions[name] = str(version)
        else:
            problems.append(f"models[{i}]: stack {source!r} registers no model named {name!r} "
                            f"(it registers: {', '.join(sorted(models)) or 'none'})")
    if problems:
        raise PromotionError("\n".join(problems))
    return {"stack": source, "images": images, "models": versions}


@dataclass(frozen=True)
class Change:
    """One image or model of the target: what it runs now, and what it would run once promoted."""

    kind: str
    name: str
    old: str
    new: str


def changes(pins: dict[str, Any], deployed: Optional[dict[str, Any]]) -> list[Change]:
    """What the target runs now (its outputs) against the pins, image by image and model by model."""
    deployed = deployed or {}
    digests = deployed.get("image_digests") if isinstance(deployed.get("image_digests"), dict) else {}
    models = deployed.get("models") if isinstance(deployed.get("models"), dict) else {}
    rows = [Change("image", name, str((digests or {}).get(name) or NOT_DEPLOYED), ref)
            for name, ref in pins["images"].items()]
    rows += [Change("model", name, str(((models or {}).get(name) or {}).get("version") or NOT_DEPLOYED), version)
             for name, version in pins["models"].items()]
    return rows


def render(source: str, target: str, rows: list[Change]) -> str:
    width = max((len(f"{r.kind} {r.name}") for r in rows), default=0)
    lines = [f"Promote '{source}' -> '{target}': what '{target}' runs now -> what it would run.", ""]
    for r in rows:
        label = f"{r.kind} {r.name}".ljust(width)
        lines.append(f"  {label}  {r.new}  (unchanged)" if r.old == r.new else f"  {label}  {r.old}\n"
                     f"  {' ' * width}  -> {r.new}")
    changed = sum(r.old != r.new for r in rows)
    lines += ["", f"{changed} of {len(rows)} would change."]
    return "\n".join(lines)


# ---- the stack file --------------------------------------------------------------------------

_CONFIG = re.compile(r"^config:\s*(#.*)?$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _scalar(value: str) -> str:
    # JSON strings are YAML double-quoted scalars: versions such as 1e50 or 012345 stay strings
    # for every YAML reader (Pulumi's Go reader takes a plain 1e50 as a number).
    return json.dumps(value)


def _key(name: str) -> str:
    """A plain key where no YAML reader could take it for anything but that string; quoted otherwise."""
    plain = re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]*", name) and yaml.safe_load(name) == name
    return name if plain else _scalar(name)


def _block(indent: str, source: str, target: str, pins: dict[str, Any]) -> list[str]:
    lines = [f"{indent}{PROMOTED}:\n",
             f"{indent}  # Written by `ml-deploy promote --from {source} --to {target}`: what this stack runs.\n",
             f"{indent}  # Review it like code; it moves only when promoted again.\n",
             f"{indent}  stack: {_scalar(pins['stack'])}\n"]
    for key in ("images", "models"):
        entries = pins[key]
        lines.append(f"{indent}  {key}:{' {}' if not entries else ''}\n")
        lines += [f"{indent}    {_key(name)}: {_scalar(value)}\n" for name, value in entries.items()]
    return lines


@dataclass(frozen=True)
class _ConfigMap:
    """Where the `config:` map of a stack file is: its lines, its keys' indentation and key lines."""

    lines: list[str]
    start: int
    end: int
    indent: int
    keys: list[int]

    @classmethod
    def scan(cls, lines: list[str]) -> "_ConfigMap":
        start = next(i for i, line in enumerate(lines) if _CONFIG.match(line))
        # The map runs until the next top-level line; its keys share the first key's indentation.
        end = next((i for i in range(start + 1, len(lines)) if lines[i].strip()
                    and not lines[i].lstrip().startswith("#") and _indent(lines[i]) == 0), len(lines))
        keys = [i for i in range(start + 1, end) if lines[i].strip() and not lines[i].lstrip().startswith(("#", "- "))]
        indent = min((_indent(lines[i]) for i in keys), default=2)
        return cls(lines, start, end, indent, [i for i in keys if _indent(lines[i]) == indent])

    def find(self, key: str) -> Optional[int]:
        return next((i for i in self.keys if self.lines[i].strip().startswith(f"{key}:")), None)

    def block_end(self, i: int) -> int:
        """The line after the value of the key at line `i` (nested lines, or a sequence at the key's indentation)."""
        lines, j = self.lines, i + 1
        while j < self.end and (not lines[j].strip() or _indent(lines[j]) > self.indent
                                or (lines[j].lstrip().startswith("- ") and _indent(lines[j]) == self.indent)):
            j += 1
        while j > i + 1 and not lines[j - 1].strip():
            j -= 1
        return j


def write_pins(path: Path, source: str, target: str, pins: dict[str, Any]) -> str:
    """The text of `path` with `ml-deploy:promote_from` and `ml-deploy:promoted` set, everything else
    (comments, order, other keys) as it was. The result is checked by parsing it back."""
    text = path.read_text()
    original = yaml.safe_load(text) or {}
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    if not any(_CONFIG.match(line) for line in lines):
        lines.append("config:\n")
    cfg = _ConfigMap.scan(lines)
    pad = " " * cfg.indent
    block = _block(pad, source, target, pins)
    at = cfg.find(PROMOTED)
    if at is not None:
        lines[at:cfg.block_end(at)] = block
    else:
        insert = cfg.block_end(cfg.keys[-1]) if cfg.keys else cfg.start + 1
        lines[insert:insert] = block
    cfg = _ConfigMap.scan(lines)
    if cfg.find(PROMOTE_FROM) is None:
        lines.insert(cfg.find(PROMOTED) or cfg.start + 1, f"{pad}{PROMOTE_FROM}: {_scalar(source)}\n")
    result = "".join(lines)

    expected = dict(original)
    expected["config"] = {**(original.get("config") or {}), PROMOTE_FROM: source, PROMOTED: pins}
    if yaml.safe_load(result) != expected:
        raise PromotionError(f"could not edit {path.name} safely (unusual layout); set these keys by hand:\n"
                             + f"{pad}{PROMOTE_FROM}: {_scalar(source)}\n" + "".join(block))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ml-deploy promote", description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--from", dest="source", required=True, help="the stack whose images and model versions to pin")
    parser.add_argument("--to", dest="target", required=True, help="the stack that will run them (Pulumi.<to>.yaml)")
    parser.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    errors.add_debug_flag(parser)
    args = parser.parse_args(argv)
    path = PROJECT_ROOT / f"Pulumi.{args.target}.yaml"
    with errors.one_line("ml-deploy promote", args.debug):
        if args.source == args.target:
            raise PromotionError(f"a stack cannot promote from itself ({args.source!r})")
        if not path.exists():
            raise PromotionError(f"no stack config {path.name}: create it first (its images entries name the "
                                 f"images and models to take from {args.source!r})")
        data = yaml.safe_load(path.read_text()) or {}
        raw = config.project_values(offline.config_values(data.get("config") or {}))
        current = raw.get("promote_from")
        if current not in (None, args.source):
            raise PromotionError(f"{path.name} promotes from {current!r}, not {args.source!r}: change "
                                 f"{PROMOTE_FROM} first if {args.target!r} should run what {args.source!r} runs")
        outputs = read_outputs(args.source)
        if outputs is None:
            raise PromotionError(f"stack {args.source!r} has no outputs: `pulumi up --stack {args.source}` first")
        pins = pins_for(raw, args.source, outputs)
        cfg = config.parse({**raw, "promote_from": args.source, "promoted": pins}, stack=args.target)
        contents = {m.name: BundledModel.from_path(m.name, m.path) for m in cfg.models}
        problems = promotion.model_problems(cfg, contents, args.target)
        if problems:
            raise ConfigError(problems)
        text = write_pins(path, args.source, args.target, pins)
    print(render(args.source, args.target, changes(pins, read_outputs(args.target))))
    if args.dry_run:
        print(f"\n--dry-run: {path.name} left as it is.")
        return 0
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    partial.replace(path)
    print(f"\nWrote {PROMOTE_FROM} and {PROMOTED} to {path.name}: review and commit it, "
          f"then `pulumi up --stack {args.target}`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
