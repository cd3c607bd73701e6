"""The CI workflow for pull requests: valid, with the jobs and steps the README promises, every
action pinned, and consistent with the project (stacks, policy pack, CLI version)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "preview.yml"
SHA_PIN = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")
VERSION_TAG = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@v\d+(\.\d+){0,2}$")


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    return workflow["jobs"][job]["steps"]


def step_using(workflow: dict[str, Any], job: str, action: str) -> dict[str, Any]:
    found = [s for s in steps(workflow, job) if str(s.get("uses", "")).startswith(action + "@")]
    assert len(found) == 1, f"{job}: {len(found)} steps use {action}"
    return found[0]


def runs(workflow: dict[str, Any], job: str) -> str:
    return "\n".join(str(s.get("run", "")) for s in steps(workflow, job))


def test_runs_on_pull_requests_with_read_only_defaults(workflow):
    # PyYAML reads the bare key `on` as the boolean True.
    triggers = workflow.get("on", workflow.get(True))
    assert "pull_request" in triggers and "pull_request_target" not in triggers
    assert workflow["permissions"] == {"contents": "read"}
    assert set(workflow["jobs"]) == {"tests", "plan-diff", "cloud-preview"}


def test_every_action_is_pinned_to_a_commit_or_a_version_tag():
    uses = re.findall(r"^\s*(?:-\s*)?uses:\s*(\S+)(.*)$", WORKFLOW.read_text(), re.M)
    assert len(uses) >= 8
    for ref, comment in uses:
        assert SHA_PIN.match(ref) or VERSION_TAG.match(ref), ref
        if SHA_PIN.match(ref):
            assert re.search(r"#\s*v\d+\.\d+\.\d+", comment), f"{ref}: name the release the commit is"


def test_tests_job_runs_the_projects_test_script(workflow):
    assert "bash scripts/test" in runs(workflow, "tests")
    step_using(workflow, "tests", "actions/setup-go")  # the engine the tests run is built with Go


def test_plan_diff_job_diffs_against_the_base_and_posts_one_sticky_comment(workflow):
    job = workflow["jobs"]["plan-diff"]
    assert job["permissions"]["pull-requests"] == "write"
    checkout = step_using(workflow, "plan-diff", "actions/checkout")
    assert checkout["with"]["fetch-depth"] == 0  # the base commit must be there for git archive
    script = runs(workflow, "plan-diff")
    assert './ml-deploy diff --base "${{ github.event.pull_request.base.sha }}" --markdown > plan-diff.md' in script
    assert "GITHUB_STEP_SUMMARY" in script
    comment = step_using(workflow, "plan-diff", "marocchino/sticky-pull-request-comment")
    assert comment["with"] == {"header": "ml-deploy-plan-diff", "path": "plan-diff.md"}
    assert "head.repo.full_name == github.repository" in comment["if"]  # forks cannot comment


def cloud_stacks() -> set[str]:
    stacks = set()
    for path in ROOT.glob("Pulumi.*.yaml"):
        config = yaml.safe_load(path.read_text()).get("config") or {}
        if (config.get("ml-deploy:workspace") or {}).get("kind", "azure") == "azure":
            stacks.add(path.name.split(".")[1])
    return stacks


def test_cloud_preview_covers_every_cloud_stack_with_the_policy_pack(workflow):
    job = workflow["jobs"]["cloud-preview"]
    assert set(job["strategy"]["matrix"]["stack"]) == cloud_stacks()
    assert {"dev", "prod"} <= cloud_stacks() and "local" not in cloud_stacks()
    pulumi = step_using(workflow, "cloud-preview", "pulumi/actions")
    with_ = pulumi["with"]
    assert with_["command"] == "preview" and with_["comment-on-pr"] is True and with_["diff"] is True
    assert with_["stack-name"] == "${{ matrix.stack }}"
    # Absolute once GitHub evaluates it: a relative path is not found (tests/test_policy_commands.py
    # runs this step's command through the engine).
    assert with_["policyPacks"] == "${{ github.workspace }}/policy/run"
    pack = ROOT / "policy" / "run"
    assert pack.is_file() and os.access(pack, os.X_OK)
    pin = re.search(r"^pulumi==([0-9.]+)$", (ROOT / "infra" / "requirements.txt").read_text(), re.M)
    assert pin and with_["pulumi-version"] == pin.group(1)


def test_cloud_preview_runs_only_where_azure_credentials_are_configured(workflow):
    job = workflow["jobs"]["cloud-preview"]
    assert job["env"]["ARM_CLIENT_ID"] == "${{ secrets.ARM_CLIENT_ID }}"
    gated = [s for s in job["steps"] if s.get("id") != "azure"]
    assert gated and all(s.get("if") == "steps.azure.outputs.configured == 'true'" for s in gated)
    check = next(s for s in job["steps"] if s.get("id") == "azure")
    assert '[ -n "$ARM_CLIENT_ID" ]' in check["run"] and "configured=true" in check["run"]
