"""kube-score (pinned, built by scripts/kube-score) on every committed stack's Kubernetes objects from
its offline plan: no CRITICAL finding on a scoring workload except the ones listed with a reason."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.kube_manifests import STACKS, built_tool, scoring_workloads, stack_objects

# `--output-format ci`: one line per finding, `[GRADE] name/namespace group/version/Kind: (container) message`.
FINDING = re.compile(r"^\[(?P<grade>[A-Z]+)\] (?P<name>[^/]+)/(?P<namespace>\S*) (?P<kind>\S+): (?P<message>.*)$")
ALLOWED = {
    # kube-score wants `Always` so a moved tag is pulled again; every scoring image is pinned by
    # digest (checked below), which never moves, so the policy changes nothing but registry traffic.
    "(scoring) ImagePullPolicy is not set to Always",
}


def kube_score() -> str:
    """The pinned binary's path (tests/kube_manifests.py built_tool)."""
    return built_tool("kube-score")


def findings(objects: list[dict], folder: Path) -> list[dict[str, str]]:
    manifests = folder / "objects.yaml"
    manifests.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    # Exit status 1 means a CRITICAL finding; the lines say which.
    result = subprocess.run([kube_score(), "score", "--output-format", "ci", str(manifests)],
                            capture_output=True, text=True)
    assert result.returncode in (0, 1), result.stderr
    return [m.groupdict() for line in result.stdout.splitlines() if (m := FINDING.match(line))]


@pytest.mark.parametrize("stack", [s for s in STACKS if stack_objects(s)])
def test_scoring_workloads_have_no_critical_finding_but_the_listed_ones(stack, tmp_path):
    objects = stack_objects(stack)
    scoring = {w["metadata"]["name"] for w in scoring_workloads(objects)}
    critical = [f for f in findings(objects, tmp_path) if f["grade"] == "CRITICAL" and f["name"] in scoring]
    assert [f"{f['name']}: {f['message']}" for f in critical if f["message"] not in ALLOWED] == []


@pytest.mark.parametrize("stack", [s for s in STACKS if stack_objects(s)])
def test_the_pull_policy_exception_holds_every_scoring_image_is_pinned_by_digest(stack):
    for workload in scoring_workloads(stack_objects(stack)):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            assert re.search(r"@sha256:[0-9a-f]{64}$", container["image"]), container["image"]


def test_kube_score_finds_what_it_should(tmp_path):
    """The check itself: a bare Deployment gets the CRITICAL findings the hardened ones no longer do."""
    bare = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bare", "namespace": "x"},
            "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{"name": "scoring", "image": "r/i@sha256:" + "0" * 64,
                                          "securityContext": {"runAsUser": 20000}}]}}}}
    messages = {f["message"] for f in findings([bare], tmp_path) if f["grade"] == "CRITICAL"}
    assert {"The pod does not have a matching NetworkPolicy",
            "(scoring) The pod has a container with a writable root filesystem",
            "(scoring) The container running with a low group ID",
            "(scoring) Ephemeral Storage limit is not set"} <= messages
