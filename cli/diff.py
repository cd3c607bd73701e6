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
import html
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable, Optional

import yaml

from cli import errors, replacements, render as show
from cli.offline import engine_urn
from cli.policy import Violation, as_dict, check, line as policy_line
from infra.schema import PROJECT_ROOT

MARKER = "<!-- ml-deploy-plan-diff -->"
MARKDOWN_LIMIT = 60_000
"""Characters of Markdown at most: GitHub refuses comments over 65,536."""
"""First line of the Markdown output: CI finds its earlier comment by it and edits it in place."""
SECRET = show.SECRET
OFFLINE_NOTE = ("Computed offline: each revision's program ran under Pulumi's mocks and the two plans "
                "were compared. Nothing was compared with cloud state: drift, and values only the cloud "
                "knows, do not show. `pulumi preview` against the stack is the final word.")

# Runs in the revision's own folder and interpreter path, so that its own cli/offline.py and
# program are the ones that run. Writes {stack: {"resources": [...]} | {"error": "..."}}.
_RECORDER = r"""
import json, os, sys
from pathlib import Path
root, out, linked_from, stacks = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
sys.path.insert(0, str(root))
# Which files each stack's program opens: a file the base revision read from outside its own tree
# (a link to the working tree's untracked copy, or an absolute path) was not the base's own bytes.
opened = set()
def _hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes)) and (args[1] is None or "r" in str(args[1])):
        opened.add(os.path.abspath(os.fsdecode(args[0])))
sys.addaudithook(_hook)
from cli import offline
skip = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix, "/proc", "/sys", "/dev", "/etc", "/usr", "/lib"})
real_root = os.path.realpath(root)
def foreign():
    found = []
    for path in sorted(opened):
        if not os.path.isfile(path) or path.startswith(skip) or "/site-packages/" in path:
            continue
        inside = path.startswith(str(root) + os.sep)
        if inside and os.path.realpath(path).startswith(real_root + os.sep):
            continue  # the revision's own file
        # A link's target in the working tree, reached by its resolved path, is the same linked file.
        via_link = bool(linked_from) and path.startswith(linked_from + os.sep)
        shown = os.path.relpath(path, root) if inside else os.path.relpath(path, linked_from) if via_link else path
        entry = {"path": shown, "kind": "linked" if inside or via_link else "outside"}
        if entry not in found:
            found.append(entry)
    return found
result = {}
for stack in stacks:
    opened.clear()
    try:
        rec = offline.run(offline.stack_config(stack, root), stack=stack)
    except FileNotFoundError:
        result[stack] = {"missing": True}
        continue
    except Exception as err:  # a config error is a result of the revision, not a failure of the diff
        result[stack] = {"error": f"{type(err).__name__}: {err}"}
        continue
    result[stack] = {"reads": foreign(), "resources": [
        {"urn": r.urn, "type": r.type, "name": r.name, "custom": r.custom, "protect": r.protect,
         "inputs": r.inputs, "secret_paths": sorted(r.secret_paths), "outputs": r.outputs,
         "delete_before_replace": r.delete_before_replace, "replace_on_changes": list(r.replace_on_changes),
         "ignore_changes": list(r.ignore_changes), "id": r.id,
         # A base revision's recorder may predate aliases; only the head's are looked at.
         "aliases": list(getattr(r, "aliases", []))}
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

    A path a stack config names that the base does not have but the working tree does (the trained
    models in models/, which scripts/setup writes and git ignores) is linked from the working tree,
    so the base's plan runs; the recorder notes every such read and the diff says that file was
    not compared.
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
        try:
            config = (yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}
        except yaml.YAMLError:
            continue  # the recorder reports the stack file itself
        for value in _strings(config):
            relative = Path(value)
            if "://" in value or relative.is_absolute() or ".." in relative.parts or not value.strip():
                continue
            target, source = into / relative, repo / relative
            if not target.exists() and not target.is_symlink() and source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(source.resolve())
    return commit


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


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
        # An offline plan: machine-local files (a kubeconfig) may be stand-ins (infra/schema.py offline).
        env = {**os.environ, "PYTHONPATH": str(root), "PULUMI_SKIP_UPDATE_CHECK": "true", "ML_DEPLOY_OFFLINE_PLAN": "1"}
        linked_from = str(as_root.resolve()) if as_root is not None else ""
        done = subprocess.run([sys.executable, "-c", _RECORDER, str(root), str(out), linked_from, *stacks],
                              cwd=root, env=env, capture_output=True, text=True)
        if done.returncode != 0 or not out.exists():
            last = next((line for line in reversed(done.stderr.splitlines()) if line.strip()), "no output")
            raise DiffError(f"the offline plan's recorder failed in {root}: {last.strip()}")
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
         "ignore_changes": list(r.ignore_changes), "id": r.id, "aliases": list(r.aliases)}
        for r in recording.resources], default=str))


# ---- comparing two plans ------------------------------------------------------------------------------

@dataclass
class PathChange:
    """One changed input: its path, and the old and new values (None when absent)."""

    path: str
    old: Any
    new: Any
    secret: bool = False


@dataclass(frozen=True)
class Reason:
    """Why a resource is replaced: a changed path and the rule it falls under."""

    path: str
    source: str
    """`provider`, `program's replace_on_changes` or `dynamic provider`."""

    def __str__(self) -> str:
        return f"{self.path} ({self.source})"


@dataclass
class Change:
    """What happens to one resource."""

    op: str
    """`create`, `update`, `replace` or `delete`."""
    urn: str
    type: str
    name: str
    paths: list[PathChange] = field(default_factory=list)
    """What changes; for a created resource, each of its inputs (old absent)."""
    reasons: list[Reason] = field(default_factory=list)
    delete_before_replace: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def replaced_by(self) -> list[str]:
        """The reasons as text (`path (source)`)."""
        return [str(r) for r in self.reasons]


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
    uncompared: list[str] = field(default_factory=list)
    """Files the base could not have its own bytes of, each with what that means."""
    violations: Optional[list[Violation]] = None
    """The policy pack's findings on the working tree's plan (None: not checked)."""

    def count(self, op: str) -> int:
        return sum(1 for c in self.changes if c.op == op)


def _ignored(path: str, ignore_changes: list[str]) -> bool:
    return bool(replacements.matches(path, ignore_changes))


def _dynamic_diff(base: dict[str, Any], head: dict[str, Any]) -> tuple[list[str], bool, Optional[str]]:
    """(replaced keys, delete first, problem) from the dynamic provider's own `diff`, as the engine
    calls it: the new provider (unpickled from the head's `__provider` input) on the old state."""
    try:
        import dill  # the serializer pulumi.dynamic uses for `__provider`

        provider = dill.loads(base64.b64decode(head["inputs"]["__provider"]))
        olds = {k: v for k, v in (base.get("outputs") or base["inputs"]).items() if k not in show.INTERNAL}
        news = {k: v for k, v in head["inputs"].items() if k not in show.INTERNAL}
        result = provider.diff(base.get("id") or "", olds, news)
    except Exception as err:  # noqa: BLE001 - reported, not fatal
        return [], False, f"its dynamic provider could not be asked ({type(err).__name__}: {err})"
    return list(result.replaces or []), bool(result.delete_before_replace), None


def _created(r: dict[str, Any]) -> Change:
    secrets = r.get("secret_paths") or []
    return Change("create", r["urn"], r["type"], r["name"], paths=[
        PathChange(p, None, v, secret=show.is_secret(p, secrets)) for p, v in show.leaves(r["inputs"])
        if p and p.split(".")[0].split("[")[0] not in show.INTERNAL])


def compare_resources(base: list[dict[str, Any]], head: list[dict[str, Any]], stack: str) -> StackDiff:
    """Match two recordings by URN and classify each resource as Pulumi's engine would."""
    diff = StackDiff(stack)
    old_by_urn = {engine_urn(r["urn"]): r for r in base}
    matched: set[str] = set()
    for r in head:
        # As the engine does: the resource's own URN, else the first of its aliases in the old state.
        urn = next((u for u in map(engine_urn, [r["urn"], *(r.get("aliases") or [])]) if u in old_by_urn), None)
        old = None if urn is None or urn in matched else old_by_urn[urn]
        if urn is not None:
            matched.add(urn)
        if old is None:
            diff.changes.append(_created(r))
            continue
        change = _compare_one(old, r)
        if change is None:
            diff.unchanged += 1
        else:
            diff.changes.append(change)
    for r in base:
        if engine_urn(r["urn"]) not in matched:
            change = Change("delete", r["urn"], r["type"], r["name"])
            if r.get("protect"):
                change.warnings.append("protected: `pulumi up` refuses to delete it until it is unprotected")
            diff.changes.append(change)
    return diff


def _compare_one(old: dict[str, Any], new: dict[str, Any]) -> Optional[Change]:
    secrets = set(old.get("secret_paths") or []) | set(new.get("secret_paths") or [])
    ignore = list(new.get("ignore_changes") or [])
    paths = [PathChange(p, a, b, secret=show.is_secret(p, secrets))
             for p, a, b in show.changed_leaves(old["inputs"], new["inputs"]) if not _ignored(p, ignore)]
    protect_changed = bool(old.get("protect")) != bool(new.get("protect"))
    if not paths and not protect_changed:
        return None
    change = Change("update", new["urn"], new["type"], new["name"], paths=paths)
    if protect_changed and not paths:
        change.warnings.append(f"protect {'on' if new.get('protect') else 'off'} (state only, no cloud call)")
    changed = [p.path for p in paths]
    provider_rules = replacements.provider_rules(new["type"])
    program_rules = list(new.get("replace_on_changes") or [])
    reasons: list[Reason] = []
    for p in changed:
        if replacements.matches(p, provider_rules):
            reasons.append(Reason(p, "provider"))
        if replacements.matches(p, program_rules):
            reasons.append(Reason(p, "program's replace_on_changes"))
    delete_first = bool(new.get("delete_before_replace"))
    if new["type"].startswith(replacements.DYNAMIC_PREFIX) and "__provider" in new["inputs"] and changed:
        keys, dynamic_delete_first, problem = _dynamic_diff(old, new)
        reasons += [Reason(k, "dynamic provider") for k in keys]
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
        change.reasons = list(dict.fromkeys(reasons))
        change.delete_before_replace = delete_first
        if old.get("protect") or new.get("protect"):
            change.warnings.append("protected: `pulumi up` refuses to replace it until it is unprotected")
    return change


def _uncompared(reads: list[dict[str, str]]) -> list[str]:
    notes = []
    for read in reads:
        if read["kind"] == "linked":
            notes.append(f"{read['path']} is not in git at the base revision, so the base cannot have its own copy: "
                         "both plans read the working tree's, and a change to it does not show here "
                         "(`pulumi preview` compares it with the deployed stack)")
        else:
            notes.append(f"{read['path']} is outside the repository: both plans read the same file, so a change "
                         "to it does not show here (`pulumi preview` compares it with the deployed stack)")
    return notes


def compare(base: dict[str, dict[str, Any]], head: dict[str, dict[str, Any]], stacks: list[str]) -> list[StackDiff]:
    """One StackDiff per stack from two `record` results (a stack missing on one side is all
    creates or all deletes)."""
    out: list[StackDiff] = []
    for stack in stacks:
        b, h = base.get(stack, {"missing": True}), head.get(stack, {"missing": True})
        errors = [f"{side}: {r['error']}" for side, r in (("base", b), ("head", h)) if "error" in r]
        if errors:
            # Only a failure this change brings fails the command: a stack whose plan fails the
            # same way on both sides is only reported.
            out.append(StackDiff(stack, error="; ".join(errors), head_failed="error" in h and h["error"] != b.get("error")))
            continue
        d = compare_resources(b.get("resources", []), h.get("resources", []), stack)
        d.uncompared = _uncompared(b.get("reads") or [])
        out.append(d)
    return out


# ---- output -------------------------------------------------------------------------------------------

_SIGN = {"create": "+", "update": "~", "replace": "+-", "delete": "-"}
_ORDER = {"replace": 0, "delete": 1, "create": 2, "update": 3}


def _shown(p: PathChange, created: bool = False) -> list[str]:
    """A changed path as lines: `path: old => new` (a created resource's: `path: value`), a
    multi-line text as its changed lines."""
    if p.secret:
        return [f"{p.path}: {SECRET}"]
    if created:
        return [f"{p.path}: {show.shown(p.new)}"] if "\n" not in str(p.new) else \
            [f"{p.path}:", *(f"  | {line}" for line in str(p.new).splitlines())]
    lines = show.text_diff(p.old, p.new)
    if lines:
        return [f"{p.path}: (text, changed lines)", *(f"  {line}" for line in lines)]
    return [f"{p.path}: {show.shown(p.old)} => {show.shown(p.new)}"]


def _summary(d: StackDiff) -> str:
    if d.error:
        return f"not compared: {d.error}"
    parts = [f"{d.count(op)} to {op}" for op in ("create", "update", "replace", "delete") if d.count(op)]
    return (", ".join(parts) or "no changes") + f", {d.unchanged} unchanged"


def _sorted(changes: list[Change]) -> list[Change]:
    return sorted(changes, key=lambda c: (_ORDER[c.op], c.type, c.name, c.urn))


def _policy_line(d: StackDiff) -> Optional[str]:
    if d.error or d.violations is None:
        return None
    mandatory = sum(v.mandatory for v in d.violations)
    if not d.violations:
        return "policy: every rule passes"
    return f"policy: {mandatory} mandatory, {len(d.violations) - mandatory} advisory violation(s)"


def render_text(diffs: list[StackDiff], base_label: str, head_label: str = "working tree") -> str:
    lines = [f"Offline plan diff: {base_label} -> {head_label}", OFFLINE_NOTE, ""]
    for d in diffs:
        lines.append(f"Stack {d.stack}: {_summary(d)}")
        for note in d.uncompared:
            lines.append(f"  ! {note}")
        for c in _sorted(d.changes):
            flags = " [delete before replace]" if c.delete_before_replace else ""
            lines.append(f"  {_SIGN[c.op]:<2} {c.op:<7} {c.type}  {c.name}{flags}")
            if c.reasons:
                lines.append(f"        replaced because: {', '.join(c.replaced_by)}")
            for p in c.paths:
                lines += [f"        {line}" for line in _shown(p, c.op == "create")]
            for w in c.warnings:
                lines.append(f"        ! {w}")
        policy = _policy_line(d)
        if policy:
            lines.append(f"  {policy}")
            lines += [f"    {policy_line(v)}" for v in d.violations or []]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: no raw `|`, no line break that ends the row."""
    return html.escape(text, quote=False).replace("|", "&#124;").replace("\n", "<br>")


def _code(text: str) -> str:
    return f"<code>{_cell(text)}</code>"


def render_markdown(diffs: list[StackDiff], base_label: str, head_label: str = "working tree") -> str:
    lines = [MARKER, "### Offline plan diff", "",
             f"`{base_label}` → `{head_label}`. **{OFFLINE_NOTE}**", "",
             "| Stack | Create | Update | Replace | Delete | Unchanged | Policy |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for d in diffs:
        if d.error:
            lines.append(f"| `{d.stack}` | {_cell('not compared: ' + d.error)} | | | | | |")
        else:
            lines.append(f"| `{d.stack}` | {d.count('create')} | {d.count('update')} | {d.count('replace')} | "
                         f"{d.count('delete')} | {d.unchanged} | {_cell(_policy_line(d) or '')} |")
    for d in diffs:
        if d.error or not (d.changes or d.uncompared or d.violations):
            continue
        lines += ["", f"<details><summary><b>{d.stack}</b>: {_cell(_summary(d))}</summary>", ""]
        lines += [f"> ⚠️ {_cell(note)}" for note in d.uncompared]
        if d.violations:
            lines += ["", "| Policy | Resource | Finding |", "|---|---|---|"]
            lines += [f"| {'**mandatory**' if v.mandatory else 'advisory'} `{v.rule}` | `{v.name}` | {_cell(v.message)} |"
                      for v in d.violations]
        if d.changes:
            lines += ["", "| | Resource | Type | Changes |", "|---|---|---|---|"]
        for c in _sorted(d.changes):
            notes = []
            if c.reasons:
                notes.append("replaced because " + ", ".join(_code(r) for r in c.replaced_by)
                             + (" (deleted first)" if c.delete_before_replace else ""))
            notes += [_code("\n".join(_shown(p, c.op == "create"))) for p in c.paths]
            notes += [f"⚠️ {_cell(w)}" for w in c.warnings]
            lines.append(f"| {c.op} | `{c.name}` | `{c.type}` | {'<br>'.join(notes)} |")
        lines += ["", "</details>"]
    text = "\n".join(lines) + "\n"
    if len(text) > MARKDOWN_LIMIT:
        cut = text.rfind("\n", 0, MARKDOWN_LIMIT - 200)
        text = text[:cut] + ("\n\n</details>\n\n**Cut here: the diff is longer than a comment may be. "
                             "`./ml-deploy diff` prints all of it.**\n")
    return text


def as_json(diffs: list[StackDiff]) -> list[dict[str, Any]]:
    """The diff as data: URNs, each path with its secrecy, replace reasons as path and rule source."""
    def value(p: PathChange, v: Any) -> Any:
        return SECRET if p.secret and v is not None else v

    return [{"stack": d.stack, "error": d.error, "unchanged": d.unchanged, "uncompared": d.uncompared,
             "policy": None if d.violations is None else [as_dict(v) for v in d.violations],
             "changes": [
                 {"op": c.op, "urn": c.urn, "type": c.type, "name": c.name,
                  "replaced_because": [{"path": r.path, "source": r.source} for r in c.reasons],
                  "delete_before_replace": c.delete_before_replace, "warnings": c.warnings,
                  "paths": [{"path": p.path, "old": value(p, p.old), "new": value(p, p.new), "secret": p.secret}
                            for p in c.paths]} for c in _sorted(d.changes)]} for d in diffs]


def _check_policy(diffs: list[StackDiff], head: dict[str, dict[str, Any]], root: Path) -> None:
    for d in diffs:
        resources = head.get(d.stack, {}).get("resources")
        if d.error or not resources:
            continue
        d.violations = check([SimpleNamespace(**r) for r in resources], d.stack, root)


def run(base_ref: str, stacks: Optional[list[str]] = None, repo: Path = PROJECT_ROOT) -> tuple[list[StackDiff], str]:
    """The plan diff between `base_ref` and the working tree of `repo`; returns (diffs, base label)."""
    with tempfile.TemporaryDirectory(prefix="ml-deploy-base-") as tmp:
        base_root = Path(tmp)
        commit = checkout(repo, base_ref, base_root)
        known = set(committed_stacks(repo)) | set(committed_stacks(repo, commit)) | {
            p.name.split(".")[1] for p in repo.glob("Pulumi.*.yaml") if p.name.count(".") == 2}
        unknown = [s for s in stacks or [] if s not in known]
        if unknown:
            raise DiffError(f"no stack {unknown[0]!r}: neither {base_ref} nor the working tree has "
                            f"Pulumi.{unknown[0]}.yaml (stacks: {', '.join(sorted(known)) or 'none'})")
        names = stacks or sorted(set(committed_stacks(repo)) | set(committed_stacks(repo, commit)))
        with ThreadPoolExecutor(max_workers=2) as pool:
            base_future = pool.submit(record, base_root, names, repo)
            head_future = pool.submit(record, repo, names)
            base, head = base_future.result(), head_future.result()
    diffs = compare(base, head, names)
    _check_policy(diffs, head, repo)
    return diffs, f"{base_ref} ({commit[:12]})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ml-deploy diff", description=(__doc__ or "").strip().splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="the git revision to compare with (default: HEAD)")
    parser.add_argument("--stack", action="append", help="a stack to compare (repeatable; default: every "
                        "committed Pulumi.<stack>.yaml)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--markdown", action="store_true", help="Markdown for a pull-request comment")
    out.add_argument("--json", action="store_true", help="the changes as JSON")
    errors.add_debug_flag(parser)
    args = parser.parse_args(argv)
    with errors.one_line("ml-deploy diff", args.debug):
        diffs, label = run(args.base, args.stack)
    if args.json:
        print(json.dumps(as_json(diffs), indent=2, sort_keys=True))
    elif args.markdown:
        print(render_markdown(diffs, label), end="")
    else:
        print(render_text(diffs, label), end="")
    failed = any(d.head_failed for d in diffs) or any(v.mandatory for d in diffs for v in d.violations or [])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
