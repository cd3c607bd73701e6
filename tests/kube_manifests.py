"""The Kubernetes objects of every committed stack, rebuilt from its offline plan as manifests
(apiVersion, kind, metadata, spec...), for the checks third-party tools and the Pod Security
Standards make of them."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from cli import offline

ROOT = Path(__file__).resolve().parents[1]


@functools.lru_cache(maxsize=None)
def built_tool(script: str) -> str:
    """The path of the pinned checker `scripts/<script>` builds (cached); the calling test skips,
    saying why, only if it cannot be built here."""
    import pytest

    built = subprocess.run(["bash", str(ROOT / "scripts" / script)], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.skip(f"{script} could not be built (scripts/{script}): {built.stderr.strip()[-500:]}")
    return built.stdout.strip()
STACKS = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))
WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job")
SCORING_CONTAINER = "scoring"


def manifest(type_: str, inputs: dict[str, Any]) -> dict[str, Any]:
    """A `kubernetes:<group>/<version>:<Kind>` resource's inputs as the object the API server stores."""
    _, group_version, kind = type_.split(":")
    api_version = group_version.removeprefix("core/")
    return {"apiVersion": api_version, "kind": kind,
            **{k: v for k, v in inputs.items() if k not in ("apiVersion", "kind") and not k.startswith("__")}}


@functools.lru_cache(maxsize=None)
def _stack_objects(stack: str) -> tuple[dict[str, Any], ...]:
    # Pulumi.lab.yaml names the lab's kubeconfig through $ML_DEPLOY_LAB: a stand-in folder, as
    # tests/test_stacks.py does, so the stack plans whether or not the lab is up.
    lab = tempfile.mkdtemp(prefix="ml-deploy-lab-")
    (Path(lab) / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: lab, cluster: {server: 'https://127.0.0.1:6443'}}]\n")
    before = os.environ.get("ML_DEPLOY_LAB")
    os.environ["ML_DEPLOY_LAB"] = lab
    try:
        rec = offline.run(offline.stack_config(stack), stack=stack)
    finally:
        if before is None:
            os.environ.pop("ML_DEPLOY_LAB", None)
        else:
            os.environ["ML_DEPLOY_LAB"] = before
        shutil.rmtree(lab, ignore_errors=True)
    return tuple(manifest(r.type, r.inputs) for r in rec.resources
                 if r.custom and r.type.startswith("kubernetes:") and not r.type.startswith("pulumi:providers"))


def stack_objects(stack: str) -> list[dict[str, Any]]:
    """Every Kubernetes object `stack` creates (planned offline, once per test session)."""
    return list(_stack_objects(stack))


def scoring_workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The workloads that run a scoring container (not the clusters' device plugins)."""
    return [o for o in objects if o["kind"] in WORKLOADS
            and any(c.get("name") == SCORING_CONTAINER for c in o["spec"]["template"]["spec"]["containers"])]
