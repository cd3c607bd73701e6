"""Every command README.md and docs/*.md show runs as written, so none goes stale.

The convention: a fenced block whose info string is `bash` holds commands a reader types at the
project root. Each one is extracted and run with `bash -e -o pipefail`, from the project root. Other
blocks are not commands (`yaml`, `text`, `json`, ...); `sh`, `shell`, `console` and fences without an
info string are refused, so that no command escapes this test by the way it is fenced.

A `bash` block that cannot run here says why in an HTML comment on the line right before it:

    <!-- not run by tests: REASON -->         needs what this machine lacks (an Azure subscription,
                                              an IoT Edge device) or is too long for a test
    <!-- run by tests/test_x.py::test_y -->    run as written by that test, which must exist
    <!-- needs the lab -->                     run only while `scripts/lab status` says the lab is
                                              up; skipped, saying so, otherwise

The block that opens a page, right under its `#` title, may carry its marker on the line right after
its closing fence instead, so the page still opens with its title and its commands (README.md's
first lines are its two commands).

Each block runs as CI would run it: the Pulumi engine (scripts/pulumi-engine) and `.venv/bin` first
on PATH; a Pulumi state backend and `PULUMI_HOME` of its own in a temporary folder, so the
developer's own stacks are never touched; `PULUMI_SKIP_CONFIRMATIONS=true`, answering the prompts
a reader answers; in a session of its own, whose processes still running afterwards are stopped. A
block that deploys must destroy what it deployed: the test fails if the block's state still holds
resources (and destroys them), or if a committed stack file changed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT, engine_dir, lab_environ

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^`\s]*)")
COMMENT = re.compile(r"^<!--\s*(.*?)\s*-->$")
NOT_RUN = re.compile(r"not run by tests: (\S.*)")
RUN_BY = re.compile(r"run by (tests/[\w/]+\.py)::(\w+)")
NEEDS_LAB = "needs the lab"
REFUSED_INFO = {"", "sh", "shell", "console", "shell-session", "zsh"}
BLOCK_TIMEOUT = 900  # the local stack's first `pulumi up` builds its environment's venv (minutes)


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    """1-based line of the opening fence."""
    info: str
    code: str
    marker: str | None
    """The HTML comment's text, or None."""

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Every fenced block of `page`, with its marker."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = opening.groups()
        end = next((j for j in range(i + 1, len(lines))
                    if lines[j].strip().startswith(fence[0] * len(fence)) and not lines[j].strip().strip(fence[0])),
                   None)
        assert end is not None, f"{page.relative_to(ROOT)}:{i + 1}: a fence that never closes"
        code = "\n".join(line[len(indent):] for line in lines[i + 1:end]) + "\n"
        found.append(Block(page, i + 1, info, code, _marker(lines, i, end)))
        i = end + 1
    return found


def _neighbour(lines: list[str], start: int, step: int) -> tuple[int, str] | None:
    """The nearest non-blank line from `start` in direction `step`."""
    j = start
    while 0 <= j < len(lines):
        if lines[j].strip():
            return j, lines[j].strip()
        j += step
    return None


def _marker(lines: list[str], opening: int, closing: int) -> str | None:
    before = _neighbour(lines, opening - 1, -1)
    if before and (match := COMMENT.match(before[1])):
        return match.group(1)
    opens_page = before == _neighbour(lines, 0, 1) and before is not None and before[1].startswith("# ")
    after = _neighbour(lines, closing + 1, 1)
    if opens_page and after and (match := COMMENT.match(after[1])):
        return match.group(1)
    return None


ALL_BLOCKS = [block for page in PAGES for block in blocks(page)]
BASH_BLOCKS = [block for block in ALL_BLOCKS if block.info == "bash"]
RUN_HERE = [block for block in BASH_BLOCKS if block.marker in (None, NEEDS_LAB)]


# ---- the conventions ----------------------------------------------------------------------------------

def test_every_command_block_is_fenced_as_bash():
    refused = [f"{b.where}: ```{b.info}" for b in ALL_BLOCKS if b.info in REFUSED_INFO]
    assert not refused, "fence commands as ```bash (run by this test) and output as ```text:\n" + "\n".join(refused)


def test_every_marker_says_why_or_names_a_test_that_exists():
    problems = []
    for block in BASH_BLOCKS:
        if block.marker is None or block.marker == NEEDS_LAB or NOT_RUN.fullmatch(block.marker):
            continue
        run_by = RUN_BY.fullmatch(block.marker)
        if run_by is None:
            problems.append(f"{block.where}: unknown marker <!-- {block.marker} -->")
            continue
        module = ROOT / run_by.group(1)
        if not module.is_file() or not re.search(rf"^def {run_by.group(2)}\(", module.read_text(), re.M):
            problems.append(f"{block.where}: no test {run_by.group(1)}::{run_by.group(2)}")
    assert not problems, "\n".join(problems)


def test_every_docs_page_opens_with_commands_that_are_run():
    for page in PAGES[1:]:
        lines = page.read_text().splitlines()
        assert lines[0].startswith("# "), f"{page.relative_to(ROOT)} opens with its title"
        first = blocks(page)[0]
        between = [line for line in lines[1:first.line - 1] if line.strip() and not COMMENT.match(line.strip())]
        assert not between and first.info == "bash", f"{page.relative_to(ROOT)}: a ```bash block right under the title"
        assert first.marker is None or not NOT_RUN.fullmatch(first.marker), f"{first.where}: the opening commands run"


def test_the_readme_opens_with_the_two_commands_and_fits_on_a_screen():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[:4] == ["# ml-deploy", "", "```bash",
                         "bash scripts/run-local   # set up, `pulumi up` the local stack (diabetes model served on 127.0.0.1), call it"]
    assert lines[4].startswith("bash scripts/test        # ")
    assert len(lines) < 200


# ---- links ---------------------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def anchors(page: Path) -> set[str]:
    """GitHub's heading ids of `page`: lowercased, punctuation but `-` and `_` dropped, spaces to `-`."""
    seen: dict[str, int] = {}
    ids = set()
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        ids.add(slug if count == 0 else f"{slug}-{count}")
    return ids


def test_every_link_between_the_pages_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
        text = re.sub(r"`[^`\n]*`", "", text)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


# ---- running the blocks --------------------------------------------------------------------------------

@functools.cache
def engine() -> str:
    return engine_dir()


def block_environ(tmp_path: Path) -> dict[str, str]:
    """CI's tools on PATH; Pulumi state of the block's own (see the module's docstring)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PULUMI_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")
           and k not in ("ML_DEPLOY_ROOT", "ML_DEPLOY_ENGINE", "ML_DEPLOY_STACK_ROOT", "ML_DEPLOY_PLUGIN_PWD")}
    env.update({
        "PATH": f"{engine()}:{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
        "PULUMI_BACKEND_URL": f"file://{tmp_path / 'state'}",
        "PULUMI_HOME": str(tmp_path / "home"),
        "PULUMI_SKIP_CONFIRMATIONS": "true",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
    })
    (tmp_path / "state").mkdir()
    return env


def stop_session(leader: int) -> None:
    """Stop what the block left running in its session (a server started with `&`)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(leader, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(leader, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def deployed(state: Path) -> dict[str, int]:
    """Stack name -> resources its state still holds."""
    left = {}
    for checkpoint in (state / ".pulumi" / "stacks").glob("*/*.json"):
        resources = (json.loads(checkpoint.read_text()).get("checkpoint", {}).get("latest") or {}).get("resources") or []
        if resources:
            left[checkpoint.stem] = len(resources)
    return left


def stack_files() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(ROOT.glob("Pulumi*.yaml"))}


@pytest.mark.parametrize("block", [pytest.param(b, id=b.where, marks=[pytest.mark.lab] if b.marker == NEEDS_LAB else [])
                                   for b in RUN_HERE])
def test_block_runs_as_written(block: Block, tmp_path: Path):
    if block.marker == NEEDS_LAB:
        lab_environ()  # skips, with the lab's status as the reason, unless the lab is up
    env = block_environ(tmp_path)
    before = stack_files()
    log = tmp_path / "output.log"
    # Output to a file, not a pipe: a server the block leaves running would hold a pipe open.
    with log.open("w") as out:
        proc = subprocess.Popen(["bash", "-e", "-o", "pipefail", "-c", block.code], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            stop_session(proc.pid)
    output = log.read_text()
    left = deployed(tmp_path / "state")
    for stack in left:
        subprocess.run(["bash", "-c", f"source scripts/pulumi-env && pulumi destroy --yes --skip-preview --stack {stack}"],
                       cwd=ROOT, env=env, capture_output=True, timeout=BLOCK_TIMEOUT)
    assert code is not None, f"{block.where} did not finish in {BLOCK_TIMEOUT} s:\n{output[-4000:]}"
    assert code == 0, f"{block.where} exited with {code}:\n{block.code}\n{output[-4000:]}"
    assert not left, f"{block.where} left resources deployed (destroyed now): {left}"
    assert stack_files() == before, f"{block.where} changed a committed stack file"
