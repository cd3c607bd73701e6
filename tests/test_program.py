"""The whole program under the mocks from the dev config: the graph, its wiring and its outputs."""

from __future__ import annotations

import runpy
from pathlib import Path

import pulumi

from cli import offline

ROOT = Path(__file__).resolve().parents[1]
WS = "ml-deploy:index:Workspace"
IMAGE = "docker-build:index:Image"
GROUP = "azure-native:containerinstance:ContainerGroup"


def test_run_path_contract_registers_the_graph(config, monkeypatch):
    """The contract other checks rely on: set_mocks + set_all_config + runpy.run_path(infra/__main__.py)."""
    import json

    monkeypatch.chdir(ROOT)
    mocks = offline.AzureMocks()
    monitor = offline.RecordingMonitor(mocks)
    pulumi.runtime.settings.reset_options(project="ml-deploy", stack="dev")
    pulumi.runtime.set_all_config({k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()})
    pulumi.runtime.set_mocks(mocks, project="ml-deploy", stack="dev", preview=False, monitor=monitor)

    @pulumi.runtime.test
    def program():
        runpy.run_path("infra/__main__.py", run_name="__main__")

    program()
    types = {r.type for r in monitor.recorded}
    assert {WS, IMAGE, GROUP, "azure-native:machinelearningservices:ModelVersion"} <= types


def test_registers_every_workflow_stage(config, run):
    rec = run(config)
    counts = {t: len(rec.of_type(t)) for t in {r.type for r in rec.resources}}
    assert counts["azure-native:machinelearningservices:Workspace"] == 1
    assert counts["azure-native:machinelearningservices:ModelContainer"] == 1
    assert counts["azure-native:machinelearningservices:ModelVersion"] == 1
    assert counts[IMAGE] == 1
    assert counts[GROUP] == 1


def test_service_runs_the_image_built_from_its_models(config, run):
    rec = run(config)
    image = rec.of_type(IMAGE)[0]
    version = rec.of_type("azure-native:machinelearningservices:ModelVersion")[0]
    group = rec.of_type(GROUP)[0]
    registry = rec.outputs["workspace"]["registry"]
    # By the pushed digest, never by a tag that could be pushed again with other bytes.
    assert group.inputs["containers"][0]["image"] == f"{registry}/diabetes@{image.outputs['digest']}"
    assert image.inputs["push"] is True and image.inputs["tags"] == [f"{registry}/diabetes:{image.inputs['tags'][0].rsplit(':', 1)[1]}"]
    # The image's build context holds the registered version of the model where Azure ML puts it.
    context = ROOT / image.inputs["context"]["location"]
    assert (context / "app" / "azureml-models" / "diabetes-ridge" / version.inputs["version"] / "diabetes-ridge.pkl").is_file()
    dockerfile = (context / "Dockerfile").read_text()
    assert f"AZUREML_MODEL_DIR=/var/azureml-app/azureml-models/diabetes-ridge/{version.inputs['version']}" in dockerfile


def test_stack_outputs_hide_keys_and_show_uris(config, run):
    rec = run(config)
    svc = rec.outputs["services"]["diabetes-aci"]
    assert svc["scoring_uri"].endswith(".westeurope.azurecontainer.io:80/score")
    assert svc["swagger_uri"].endswith("/swagger.json")
    assert "services.diabetes-aci.primary_key" in rec.output_secret_paths
    assert "services.diabetes-aci.scoring_uri" not in rec.output_secret_paths
    assert rec.outputs["models"]["diabetes-ridge"]["version"]
    assert rec.outputs["images"]["diabetes"].startswith(rec.outputs["workspace"]["registry"] + "/diabetes@sha256:")


def test_every_child_is_parented_to_its_component(config, run):
    rec = run(config)
    for r in rec.resources:
        if r.custom:
            assert r.parent and rec.by_urn(r.parent).type.startswith("ml-deploy:index:"), r.name


def test_two_images_share_one_model_version(config, run, model_files):
    config["ml-deploy:images"].append(dict(config["ml-deploy:images"][0], name="diabetes-copy"))
    rec = run(config)
    assert len(rec.of_type("azure-native:machinelearningservices:ModelVersion")) == 1
    assert len(rec.of_type(IMAGE)) == 2
    copy = next(r for r in rec.of_type(IMAGE) if r.name == "diabetes-copy-image")
    assert rec.outputs["images"]["diabetes-copy"].endswith(f"/diabetes-copy@{copy.outputs['digest']}")
