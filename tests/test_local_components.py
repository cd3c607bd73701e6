"""The local target under the mocks: the same workflow as dynamic resources, no Azure resource at all."""

from __future__ import annotations

DYNAMIC = "pulumi-python:dynamic:Resource"


def local_config(config):
    config["ml-deploy:workspace"] = {"name": "local", "kind": "local", "path": ".ml-deploy/test-local", "protect": False}
    config["ml-deploy:services"] = [{"name": "diabetes-local", "image": "diabetes", "target": "local", "auth_enabled": True}]
    return config


def test_local_stack_registers_model_bundle_and_process(config, run):
    rec = run(local_config(config))
    assert not [r for r in rec.resources if r.type.startswith("azure-native:")]
    names = sorted(r.name for r in rec.of_type(DYNAMIC))
    assert names == ["diabetes-bundle", "diabetes-local-process", "diabetes-ridge-version", "diabetes-venv"]


def test_bundle_is_tagged_like_the_image_and_waits_for_its_model(config, run):
    rec = run(local_config(config))
    bundle = rec.by_name(DYNAMIC, "diabetes-bundle")
    model = rec.by_name(DYNAMIC, "diabetes-ridge-version")
    assert rec.outputs["images"]["diabetes"] == f"local/diabetes:{bundle.inputs['tag']}"
    assert model.inputs["version"] == rec.outputs["models"]["diabetes-ridge"]["version"]
    assert model.urn in bundle.dependencies
    sources = {rel for rel, _kind, _value in bundle.inputs["sources"]}
    assert f"app/azureml-models/diabetes-ridge/{model.inputs['version']}/diabetes-ridge.pkl" in sources


def test_service_process_serves_the_bundle_with_auth(config, run):
    rec = run(local_config(config))
    process = rec.by_name(DYNAMIC, "diabetes-local-process")
    assert process.inputs["auth_enabled"] is True and process.inputs["port"] == 0
    assert process.inputs["model_dir"].startswith("azureml-models/diabetes-ridge/")
    assert "services.diabetes-local.primary_key" in rec.output_secret_paths


def test_local_bundle_has_the_container_images_tag(config, run):
    container_tag = run(config).of_type("docker-build:index:Image")[0].inputs["tags"][0].rsplit(":", 1)[1]
    local_ref = run(local_config(config)).outputs["images"]["diabetes"]
    assert local_ref == f"local/diabetes:{container_tag}"
