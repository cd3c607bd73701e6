"""The container target under the mocks: the pushed image as a container on this machine, one port
per container, keys as secrets, its log from the engine. (tests/test_lab_stack.py runs it for real.)"""

from __future__ import annotations

from tests.helpers import assert_rejected

DYNAMIC = "pulumi-python:dynamic:Resource"


def container_config(config, **service):
    config["ml-deploy:workspace"] = {"name": "lab", "kind": "local", "path": ".ml-deploy/test-lab",
                                     "protect": False, "registry": "127.0.0.1:5000",
                                     "docker_host": "unix:///run/lab/docker.sock"}
    config["ml-deploy:services"] = [{"name": "diabetes-container", "image": "diabetes", "target": "container",
                                     "auth_enabled": True, **service}]
    return config


def test_the_container_runs_the_pushed_image_by_digest_on_the_workspaces_engine(config, run):
    rec = run(container_config(config))
    container = rec.by_name(DYNAMIC, "diabetes-container-container").inputs
    assert container["image"] == rec.outputs["images"]["diabetes"]
    assert container["image"].startswith("127.0.0.1:5000/diabetes@sha256:")
    assert container["docker_host"] == "unix:///run/lab/docker.sock"
    assert container["port"] == 0  # a free port, picked when it is created


def test_its_keys_are_secret(config, run):
    rec = run(container_config(config))
    assert {"services.diabetes-container.primary_key", "services.diabetes-container.secondary_key"} <= rec.output_secret_paths


def test_it_needs_a_registry(config):
    container_config(config)
    del config["ml-deploy:workspace"]["registry"]
    assert_rejected(config, "services[0].target", "'container' on a local workspace needs workspace.registry")


def test_it_needs_a_local_workspace(config):
    config["ml-deploy:services"][0] = {"name": "diabetes-container", "image": "diabetes", "target": "container"}
    assert_rejected(config, "services[0].target", "'container' needs a workspace of kind local")


def test_two_containers_cannot_share_a_port(config):
    container_config(config, port=8080)
    config["ml-deploy:services"].append(dict(config["ml-deploy:services"][0], name="diabetes-other"))
    assert_rejected(config, "services[1].port", "8080 is already used by services[0]")


def test_its_log_comes_from_the_engine_that_runs_it(config, run):
    logs = run(container_config(config)).outputs["services"]["diabetes-container"]["logs"]
    assert logs["kind"] == "docker" and logs["docker_host"] == "unix:///run/lab/docker.sock"
