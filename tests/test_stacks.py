"""Every committed stack config runs under the mocks: the examples in the repository stay valid."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cli import offline
from cli.plan import render

ROOT = Path(__file__).resolve().parents[1]
STACKS = sorted(p.name.split(".")[1] for p in ROOT.glob("Pulumi.*.yaml"))


@pytest.fixture(autouse=True)
def template_models(model_files):
    """The stack files point at models/ (written by scripts/setup); make sure it is there."""
    target = ROOT / "models"
    target.mkdir(exist_ok=True)
    for f in model_files:
        if not (target / f.name).exists():
            shutil.copy(f, target / f.name)


@pytest.fixture(autouse=True)
def lab_env(monkeypatch, tmp_path):
    """Pulumi.lab.yaml names the lab's files through $ML_DEPLOY_LAB (scripts/lab's env file): a
    stand-in lab folder with a kubeconfig, so the stack is checked whether or not the lab is up."""
    (tmp_path / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\nclusters: [{name: lab, cluster: {server: 'https://127.0.0.1:6443'}}]\n")
    monkeypatch.setenv("ML_DEPLOY_LAB", str(tmp_path))


@pytest.mark.parametrize("stack", STACKS)
def test_stack_config_registers_its_graph(stack):
    rec = offline.run(offline.stack_config(stack), stack=stack)
    assert rec.resources and set(rec.outputs) == {"workspace", "models", "images", "image_digests", "services"}
    plan = render(rec, stack)
    assert "NOT compared with any cloud state" in plan
    for service in rec.outputs["services"].values():
        assert not service["primary_key"] or service["primary_key"] not in plan


def test_the_expected_stacks_exist():
    assert {"dev", "lab", "local", "prod"} <= set(STACKS)
