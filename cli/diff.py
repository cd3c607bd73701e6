"""`ml-deploy diff`: what a change does to each stack, computed offline: the offline plan of a base
revision and of the working tree, compared resource by resource.

    ./ml-deploy diff [--base REF] [--stack S ...] [--markdown | --json]

Each revision's program runs under Pulumi's mocks (cli/offline.py) in its own process: the base
from a `git archive` of REF in a temporary folder, the head from the working tree. Resources are
matched by URN: created, deleted, updated (the changed input paths; secret values shown as
[secret]) or replaced where the provider would replace them (cli/replacements.py), where the
program asks for it (`replace_on_changes`) or where a dynamic provider's `diff` says so. Nothing is
compared with any cloud state: a resource changed by hand, or an output only the cloud knows,
does not show.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from cli import replacements
from infra.config import PROJECT_ROOT

MARKER = "<!-- ml-deploy-plan-diff -->"
MARKDOWN_LIMIT = 60_000
"""Characters of Markdown at most: GitHub refuses comments over 65,536."""
"""First line of the Markdown output: CI finds its earlier comment by it and edits it in place."""
SECRET = "[secret]"
_INTERNAL = {"__provider", "__defaults"}
_MAX_VALUE = 80
OFFLINE_NOTE = ("Computed offline: each revision's program ran under Pulumi's mocks and the two plans "
                "were compared. Nothing was compared with cloud state: drift, and values only the cloud "
                "knows, do not show. `pulumi preview` against the stack is the final word.")

# Runs in the revision's own folder and interpreter path, so that its own cli/offline.py and
# program are the ones that run. Writes {stack: {"resources": [...]} | {"error": "..."}}.
_RECORDER = r"""
import json, sys
from pathlib import Path
root, out, stacks = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
sys.path.insert(0, str(root))
from cli import offline
result = {}
for stack in stacks:
    try:
        rec = offline.run(offline.stack_config(stack, root), stack=stack)
    except FileNotFoundError:
        result[stack] = {"missing": True}
        continue
    except Exception as err:  # a config error is a result of the revision, not a failure of the diff
        result[stack] = {"error": f"{type(err).__name__}: {err}"}
        continue
    result[stack] = {"resources": [
        {"urn": r.urn, "type": r.type, "name": r.name, "custom": r.custom, "protect": r.protect,
         "inputs": r.inputs, "secret_paths": sorted(r.secret_paths), "outputs": r.outputs,
         "delete_before_replace": r.delete_before_replace, "replace_on_changes": list(r.replace_on_changes),
         "ignore_changes": list(r.ignore_changes), "id": r.id}
        for r in rec.resources]}
Path(out).write_text(json.dumps(result, default=str))
"""


# ---- running a revision ----------------------------------------------------------------------------

class DiffError(Exception):
    """The diff could not be computed (bad revision, a program that crashed)."""


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise DiffError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def committed_stacks(repo: Path, ref: Optional[str] = None) -> list[str]:
    """The stacks whose `Pulumi.<stack>.yaml` is committed at `ref` (or tracked in the working tree)."""
    listing = git(repo, "ls-tree", "--name-only", ref, "--", ".") if ref else git(repo, "ls-files")
    # Only the project's own folder: a Pulumi.<stack>.yaml deeper down belongs to another project.
    names = [line for line in listing.splitlines() if "/" not in line]
    return sorted(n.split(".")[1] for n in names if n.startswith("Pulumi.") and n.endswith(".yaml")
                  and n.count(".") == 2)


def checkout(repo: Path, ref: str, into: Path) -> str:
    """Extract the tree of `ref` into `into` (no worktree left behind); returns the full commit id.

    Files a stack config names that git does not track (the trained models in models/, which
    scripts/setup writes) are linked from the working tree, so both revisions read the same ones.
    """
    commit = git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}")
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit],
                             capture_output=True, check=True).stdout
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(into, filter="data")
    for stack_file in into.glob("Pulumi.*.yaml"):
        config = (yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}
        for model in config.get("ml-deploy:models") or []:
            relative = Path(str(model.get("path", "")))
            if relative.is_absolute() or not str(relative):
                continue
            target, source = into / relative, repo / relative
            if not target.exists() and source.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(source.resolve())
    return commit


def _relocate(value: Any, roots: tuple[str, ...], to: str) -> Any:
    if isinstance(value, str):
        for root in roots:
            value = value.replace(root, to)
        return value
    if isinstance(value, dict):
        return {k: _relocate(v, roots, to) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocate(v, roots, to) for v in value]
    return value


def record(root: Path, stacks: list[str], as_root: Optional[Path] = None) -> dict[str, dict[str, Any]]:
    """Run the program found in `root` under the mocks for each stack, in a fresh interpreter.

    With `as_root`, every absolute path under `root` in the recording is rewritten as if the
    revision had run in `as_root`: where a checkout lives is not a change."""
    with tempfile.TemporaryDirectory(prefix="ml-deploy-record-") as tmp:
        out = Path(tmp) / "recording.json"
        env = {**os.environ, "PYTHONPATH": str(root), "PULUMI_SKIP_UPDATE_CHECK": "true"}
        done = subprocess.run([sys.executable, "-c", _RECORDER, str(root), str(out), *stacks],
                              cwd=root, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            raise DiffError(f"the offline plan failed in {root}:\n{done.stderr[-3000:]}")
        result = json.loads(out.read_text())
    if as_root is None:
        return result
    return _relocate(result, tuple(dict.fromkeys((str(root.resolve()), str(root)))), str(as_root))


def as_records(recording: Any) -> list[dict[str, Any]]:
    """A cli.offline Recording in the recorder's JSON shape (the recorder above writes the same keys)."""
    return json.loads(json.dumps([
        {"urn": r.urn, "type": r.type, "name": r.name, "custom": r.custom, "protect": r.protect,
         "inputs": r.inputs, "secret_paths": sorted(r.secret_paths), "outputs": r.outputs,
         "delete_before_replace": r.delete_before_replace, "replace_on_changes": list(r.replace_on_changes),
         "ignore_changes": list(r.ignore_changes), "id": r.id}
        for r in recording.resources], default=str))


# ---- comparing two plans ------------------------------------------------------------------------------

@dataclass
class PathChange:
    """One changed input: its path, and the old and new values (None when absent)."""

    path: str
    old: Any
    new: Any
    secret: bool = False


@dataclass
class Change:
    """What happens to one resource."""

    op: str
    """`create`, `update`, `replace` or `delete`."""
    urn: str
    type: str
    name: str
    paths: list[PathChange] = field(default_factory=list)
    replaced_by: list[str] = field(default_factory=list)
    """Why it is replaced: the rules (provider, program or dynamic provider) its changes fall under."""
    delete_before_replace: bool = False
    warnings: list[str] = field(default_factory=list)


@dataclass
class StackDiff:
    """The changes to one stack, or why it could not be compared."""

    stack: str
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0
    error: Optional[str] = None
    head_failed: bool = False
    """The working tree's program failed on this stack where the base's did not (a failure on
    both sides, or on the base alone, is only reported)."""

    def count(self, op: str) -> int:
        return sum(1 for c in self.changes if c.op == op)


def _leaves(old: Any, new: Any, path: str) -> Iterable[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if key in _INTERNAL and not path:
                continue
            child = f"{path}.{key}" if path else str(key)
            yield from _leaves(old.get(key), new.get(key), child)
    elif isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            yield from _leaves(old[i] if i < len(old) else None, new[i] if i < len(new) else None, f"{path}[{i}]")
    elif old != new:
        yield path, old, new


def _under(path: str, prefixes: Iterable[str]) -> bool:
    return any(path == p or path.startswith(p + ".") or path.startswith(p + "[") for p in prefixes)


def _ignored(path: str, ignore_changes: list[str]) -> bool:
    return bool(replacements.matches(path, ignore_changes))


def _dynamic_diff(base: dict[str, Any], head: dict[str, Any]) -> tuple[list[str], bool, Optional[str]]:
    """(replaced keys, delete first, problem) from the dynamic provider's own `diff`, as the engine
    calls it: the new provider (unpickled from the head's `__provider` input) on the old state."""
    try:
        import dill  # the serializer pulumi.dynamic uses for `__provider`

        provider = dill.loads(base64.b64decode(head["inputs"]["__provider"]))
        olds = {k: v for k, v in (base.get("outputs") or base["inputs"]).items() if k not in _INTERNAL}
        news = {k: v for k, v in head["inputs"].items() if k not in _INTERNAL}
        result = provider.diff(base.get("id") or "", olds, news)
    except Exception as err:  # noqa: BLE001 - reported, not fatal
        return [], False, f"its dynamic provider could not be asked ({type(err).__name__}: {err})"
    return list(result.replaces or []), bool(result.delete_before_replace), None


def compare_resources(base: list[dict[str, Any]], head: list[dict[str, Any]], stack: str) -> StackDiff:
    """Match two recordings by URN and classify each resource as Pulumi's engine would."""
    diff = StackDiff(stack)
    old_by_urn = {r["urn"]: r for r in base}
    new_by_urn = {r["urn"]: r for r in head}
    for r in head:
        if r["urn"] not in old_by_urn:
            diff.changes.append(Change("create", r["urn"], r["type"], r["name"]))
    for r in head:
        old = old_by_urn.get(r["urn"])
        if old is None:
            continue
        change = _compare_one(old, r)
        if change is None:
            diff.unchanged += 1
        else:
            diff.changes.append(change)
    for r in base:
        if r["urn"] not in new_by_urn:
            change = Change("delete", r["urn"], r["type"], r["name"])
            if r.get("protect"):
                change.warnings.append("protected: `pulumi up` refuses to delete it until it is unprotected")
            diff.changes.append(change)
    return diff


def _compare_one(old: dict[str, Any], new: dict[str, Any]) -> Optional[Change]:
    secrets = set(old.get("secret_paths") or []) | set(new.get("secret_paths") or [])
    ignore = list(new.get("ignore_changes") or [])
    paths = [PathChange(p, a, b, secret=_under(p, secrets))
             for p, a, b in _leaves(old["inputs"], new["inputs"], "") if not _ignored(p, ignore)]
    protect_changed = bool(old.get("protect")) != bool(new.get("protect"))
    if not paths and not protect_changed:
        return None
    change = Change("update", new["urn"], new["type"], new["name"], paths=paths)
    if protect_changed and not paths:
        change.warnings.append(f"protect {'on' if new.get('protect') else 'off'} (state only, no cloud call)")
    changed = [p.path for p in paths]
    provider_rules = replacements.provider_rules(new["type"])
    program_rules = list(new.get("replace_on_changes") or [])
    reasons: list[str] = []
    for p in changed:
        if replacements.matches(p, provider_rules):
            reasons.append(f"{p} (provider)")
        if replacements.matches(p, program_rules):
            reasons.append(f"{p} (program's replace_on_changes)")
    delete_first = bool(new.get("delete_before_replace"))
    if new["type"].startswith(replacements.DYNAMIC_PREFIX) and "__provider" in new["inputs"] and changed:
        keys, dynamic_delete_first, problem = _dynamic_diff(old, new)
        reasons += [f"{k} (dynamic provider)" for k in keys]
        delete_first = delete_first or (dynamic_delete_first and bool(keys))
        if problem:
            change.warnings.append(problem)
    for p in changed:
        why = replacements.refused_in_place(new["type"], p)
        if why and not reasons:
            change.warnings.append(f"{p}: {why}; `pulumi up` will fail on it")
            break
    if reasons:
        change.op = "replace"
        change.replaced_by = list(dict.fromkeys(reasons))
        change.delete_before_replace = delete_first
        if old.get("protect") or new.get("protect"):
            change.warnings.append("protected: `pulumi up` refuses to replace it until it is unprotected")
    return change


def compare(base: dict[str, dict[str, Any]], head: dict[str, dict[str, Any]], stacks: list[str]) -> list[StackDiff]:
    """One StackDiff per stack from two `record` results (a stack missing on one side is all
    creates or all deletes)."""
    out: list[StackDiff] = []
    for stack in stacks:
        b, h = base.get(stack, {"missing": True}), head.get(stack, {"missing": True})
        errors = [f"{side}: {r['error']}" for side, r in (("base", b), ("head", h)) if "error" in r]
        if errors:
            # Only a failure this change brings fails the command: a stack whose plan fails the
            # same way on both sides (the lab stack where no lab was ever set up) is only reported.
            out.append(StackDiff(stack, error="; ".join(errors), head_failed="error" in h and h["error"] != b.get("error")))
            continue
        out.append(compare_resources(b.get("resources", []), h.get("resources", []), stack))
    return out


# ---- output -------------------------------------------------------------------------------------------

_SIGN = {"create": "+", "update": "~", "replace": "+-", "delete": "-"}
_ORDER = {"replace": 0, "delete": 1, "create": 2, "update": 3}


def _value(v: Any) -> str:
    text = "(absent)" if v is None else json.dumps(v, sort_keys=True)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 3] + "..."


def _shown(p: PathChange) -> str:
    if p.secret:
        return f"{p.path}: {SECRET}"
    return f"{p.path}: {_value(p.old)} => {_value(p.new)}"


def _summary(d: StackDiff) -> str:
    if d.error:
        return f"not compared: {d.error}"
    parts = [f"{d.count(op)} to {op}" for op in ("create", "update", "replace", "delete") if d.count(op)]
    return (", ".join(parts) or "no changes") + f", {d.unchanged} unchanged"


def _sorted(changes: list[Change]) -> list[Change]:
    return sorted(changes, key=lambda c: (_ORDER[c.op], c.type, c.name))


def render_text(diffs: list[StackDiff], base_label: str, head_label: str = "working tree") -> str:
    lines = [f"Offline plan diff: {base_label} -> {head_label}", OFFLINE_NOTE, ""]
    for d in diffs:
        lines.append(f"Stack {d.stack}: {_summary(d)}")
        for c in _sorted(d.changes):
            flags = " [delete before replace]" if c.delete_before_replace else ""
            lines.append(f"  {_SIGN[c.op]:<2} {c.op:<7} {c.type}  {c.name}{flags}")
            if c.replaced_by:
                lines.append(f"        replaced because: {', '.join(c.replaced_by)}")
            for p in c.paths:
                lines.append(f"        {_shown(p)}")
            for w in c.warnings:
                lines.append(f"        ! {w}")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(diffs: list[StackDiff], base_label: str, head_label: str = "working tree") -> str:
    lines = [MARKER, "### Offline plan diff", "",
             f"`{base_label}` → `{head_label}`. **{OFFLINE_NOTE}**", "",
             "| Stack | Create | Update | Replace | Delete | Unchanged |", "|---|---:|---:|---:|---:|---:|"]
    for d in diffs:
        if d.error:
            lines.append(f"| `{d.stack}` | {_md(d.error)} | | | | |")
        else:
            lines.append(f"| `{d.stack}` | {d.count('create')} | {d.count('update')} | {d.count('replace')} | "
                         f"{d.count('delete')} | {d.unchanged} |")
    for d in diffs:
        if d.error or not d.changes:
            continue
        lines += ["", f"<details><summary><b>{d.stack}</b>: {_summary(d)}</summary>", "",
                  "| | Resource | Type | Changes |", "|---|---|---|---|"]
        for c in _sorted(d.changes):
            notes = []
            if c.replaced_by:
                notes.append("replaced because " + ", ".join(f"`{r}`" for r in c.replaced_by)
                             + (" (deleted first)" if c.delete_before_replace else ""))
            notes += [f"`{_shown(p)}`" for p in c.paths]
            notes += [f"⚠️ {w}" for w in c.warnings]
            lines.append(f"| {c.op} | `{c.name}` | `{c.type}` | {_md('<br>'.join(notes))} |")
        lines += ["", "</details>"]
    text = "\n".join(lines) + "\n"
    if len(text) > MARKDOWN_LIMIT:
        cut = text.rfind("\n", 0, MARKDOWN_LIMIT - 200)
        text = text[:cut] + ("\n\n</details>\n\n**Cut here: the diff is longer than a comment may be. "
                             "`./ml-deploy diff` prints all of it.**\n")
    return text


def as_json(diffs: list[StackDiff]) -> list[dict[str, Any]]:
    return [{"stack": d.stack, "error": d.error, "unchanged": d.unchanged, "changes": [
        {"op": c.op, "urn": c.urn, "type": c.type, "name": c.name, "replaced_by": c.replaced_by,
         "delete_before_replace": c.delete_before_replace, "warnings": c.warnings,
         "paths": [{"path": p.path, "old": SECRET if p.secret else p.old, "new": SECRET if p.secret else p.new}
                   for p in c.paths]} for c in _sorted(d.changes)]} for d in diffs]


def run(base_ref: str, stacks: Optional[list[str]] = None, repo: Path = PROJECT_ROOT) -> tuple[list[StackDiff], str]:
    """The plan diff between `base_ref` and the working tree of `repo`; returns (diffs, base label)."""
    with tempfile.TemporaryDirectory(prefix="ml-deploy-base-") as tmp:
        base_root = Path(tmp)
        commit = checkout(repo, base_ref, base_root)
        names = stacks or sorted(set(committed_stacks(repo)) | set(committed_stacks(repo, commit)))
        with ThreadPoolExecutor(max_workers=2) as pool:
            base_future = pool.submit(record, base_root, names, repo)
            head_future = pool.submit(record, repo, names)
            base, head = base_future.result(), head_future.result()
    return compare(base, head, names), f"{base_ref} ({commit[:12]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ml-deploy diff", description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="the git revision to compare with (default: HEAD)")
    parser.add_argument("--stack", action="append", help="a stack to compare (repeatable; default: every "
                        "committed Pulumi.<stack>.yaml)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--markdown", action="store_true", help="Markdown for a pull-request comment")
    out.add_argument("--json", action="store_true", help="the changes as JSON")
    args = parser.parse_args(argv)
    try:
        diffs, label = run(args.base, args.stack)
    except DiffError as err:
        print(f"ml-deploy diff: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(as_json(diffs), indent=2))
    elif args.markdown:
        print(render_markdown(diffs, label), end="")
    else:
        print(render_text(diffs, label), end="")
    return 1 if any(d.head_failed for d in diffs) else 0


if __name__ == "__main__":
    sys.exit(main())
