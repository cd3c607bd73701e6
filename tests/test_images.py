"""Scoring images: built with BuildKit (pulumi-docker-build) from the generated context, pushed, run
by digest; their environment from a conda file or pip requirements; a local workspace's registry."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import TEMPLATES, assert_rejected

IMAGE = "docker-build:index:Image"
GROUP = "azure-native:containerinstance:ContainerGroup"


def _context(rec) -> Path:
    return Path(rec.of_type(IMAGE)[0].inputs["context"]["location"])


def use_pip(config, requirements: Path = TEMPLATES / "sklearn" / "requirements.txt"):
    image = config["ml-deploy:images"][0]
    del image["conda_file"]
    image["pip_requirements"] = str(requirements)
    return config


def lab_like(config, **workspace):
    """A local workspace whose images are also pushed to a registry, and a container service."""
    config["ml-deploy:workspace"] = {"name": "lab", "kind": "local", "path": ".ml-deploy/test-lab",
                                     "protect": False, "registry": "127.0.0.1:5000", **workspace}
    config["ml-deploy:services"] = [{"name": "diabetes-container", "image": "diabetes", "target": "container"}]
    return config


def test_image_is_pushed_for_linux_amd64_and_tagged_by_content(config, run):
    image = run(config).of_type(IMAGE)[0].inputs
    assert image["push"] is True
    assert image["platforms"] == ["linux/amd64"]
    registry, tag = image["tags"][0].rsplit("/", 1)[0], image["tags"][0].rsplit(":", 1)[1]
    assert registry.endswith(".azurecr.io") and len(tag) == 16
    assert image["dockerfile"]["location"] == str(_context(run(config)) / "Dockerfile")


def test_services_and_outputs_use_the_pushed_digest(config, run):
    rec = run(config)
    image = rec.of_type(IMAGE)[0]
    ref = f"{rec.outputs['workspace']['registry']}/diabetes@{image.outputs['digest']}"
    assert image.outputs["digest"].startswith("sha256:")
    assert rec.of_type(GROUP)[0].inputs["containers"][0]["image"] == ref
    assert rec.outputs["images"]["diabetes"] == ref


def test_a_changed_script_changes_the_tag_and_so_the_digest_every_service_runs(config, run, tmp_path):
    script = tmp_path / "score.py"
    script.write_text((TEMPLATES / "sklearn" / "score.py").read_text())
    config["ml-deploy:images"][0]["execution_script"] = str(script)
    before = run(config)
    script.write_text(script.read_text() + "\n# new behaviour\n")
    after = run(config)
    assert before.of_type(IMAGE)[0].inputs["tags"] != after.of_type(IMAGE)[0].inputs["tags"]
    assert before.outputs["images"]["diabetes"] != after.outputs["images"]["diabetes"]


def test_conda_image_creates_the_conda_env_first(config, run):
    dockerfile = (_context(run(config)) / "Dockerfile").read_text()
    assert "conda env create --prefix /opt/scoring-env --file /tmp/env.yml" in dockerfile
    assert (_context(run(config)) / "app" / "env.yml").is_file()


def test_pip_image_builds_a_venv_with_its_requirements_and_the_runtimes(config, run):
    rec = run(use_pip(config))
    context = _context(rec)
    dockerfile = (context / "Dockerfile").read_text()
    assert "conda" not in dockerfile
    assert "python3 -m venv --copies /opt/scoring-env" in dockerfile
    assert "-r /tmp/requirements.txt -r /tmp/serving-requirements.txt" in dockerfile
    assert (context / "app" / "requirements.txt").read_text() == (TEMPLATES / "sklearn" / "requirements.txt").read_text()
    assert not (context / "app" / "env.yml").exists()


def test_the_environments_python_may_bind_port_80_as_the_non_root_user(config, run):
    dockerfile = (_context(run(use_pip(config))) / "Dockerfile").read_text()
    capability = dockerfile.index("security.capability")
    assert "0x02000001, 1 << 10" in dockerfile  # effective, permitted CAP_NET_BIND_SERVICE
    assert capability < dockerfile.index("USER 10001")


def test_an_image_takes_exactly_one_environment(config):
    config["ml-deploy:images"][0]["pip_requirements"] = str(TEMPLATES / "sklearn" / "requirements.txt")
    assert_rejected(config, "images[0]", "exactly one of conda_file or pip_requirements (both are set)")


def test_an_image_without_an_environment_is_rejected(config):
    del config["ml-deploy:images"][0]["conda_file"]
    assert_rejected(config, "images[0]", "exactly one of conda_file or pip_requirements (neither is set)")


def test_pip_requirements_must_exist(config):
    use_pip(config, Path("scoring_templates/sklearn/nope.txt"))
    assert_rejected(config, "images[0].pip_requirements", "does not exist")


def test_pip_requirements_may_not_include_other_files(config, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("numpy\n-r other.txt\n")
    use_pip(config, requirements)
    assert_rejected(config, "images[0].pip_requirements", "'-r other.txt': only this file goes into the image")


# ---- a local workspace with a registry ------------------------------------------------------------

def test_local_workspace_with_a_registry_pushes_every_image_there(config, run):
    rec = run(lab_like(config))
    image = rec.of_type(IMAGE)[0].inputs
    assert image["tags"][0].startswith("127.0.0.1:5000/diabetes:") and image["push"] is True
    assert rec.outputs["images"]["diabetes"].startswith("127.0.0.1:5000/diabetes@sha256:")
    assert not [r for r in rec.resources if r.type.startswith("azure-native:")]


def test_local_workspace_without_a_registry_builds_no_image(config, run):
    config["ml-deploy:workspace"] = {"name": "local", "kind": "local", "path": ".ml-deploy/test-local", "protect": False}
    config["ml-deploy:services"] = [{"name": "diabetes-local", "image": "diabetes", "target": "local"}]
    assert run(config).of_type(IMAGE) == []


def test_a_registry_is_only_for_local_workspaces(config):
    config["ml-deploy:workspace"]["registry"] = "127.0.0.1:5000"
    assert_rejected(config, "workspace.registry", "only with kind: local")


def test_a_registry_is_an_address_not_a_url(config):
    lab_like(config, registry="http://127.0.0.1:5000")
    assert_rejected(config, "workspace.registry", "should match pattern")


def test_docker_host_gives_the_build_its_own_provider(config, run, monkeypatch):
    monkeypatch.setenv("ML_DEPLOY_TEST_LAB", "/var/tmp/lab")
    rec = run(lab_like(config, docker_host="unix://${ML_DEPLOY_TEST_LAB}/docker.sock", build_network="host"))
    provider = rec.by_name("pulumi:providers:docker-build", "diabetes-docker")
    assert provider.inputs["host"] == "unix:///var/tmp/lab/docker.sock"
    image = rec.of_type(IMAGE)[0]
    assert image.inputs["network"] == "host"
    assert rec.by_name("pulumi-python:dynamic:Resource", "diabetes-container-container").inputs["docker_host"] \
        == "unix:///var/tmp/lab/docker.sock"


def test_docker_host_with_an_unset_variable_names_it(config, monkeypatch):
    monkeypatch.delenv("ML_DEPLOY_TEST_UNSET", raising=False)
    lab_like(config, docker_host="unix://$ML_DEPLOY_TEST_UNSET/docker.sock")
    assert_rejected(config, "workspace.docker_host", "$ML_DEPLOY_TEST_UNSET is not set")


def test_without_docker_host_the_default_provider_builds(config, run):
    rec = run(config)
    assert rec.of_type("pulumi:providers:docker-build") == []
    assert rec.of_type(IMAGE)[0].inputs["network"] == "default"


def test_a_named_builder_is_used_for_every_build(config, run):
    rec = run(lab_like(config, builder="ml-deploy-lab"))
    assert rec.of_type(IMAGE)[0].inputs["builder"] == {"name": "ml-deploy-lab"}


def test_a_variable_with_a_default_is_expanded_unset_or_set(config, run, monkeypatch):
    """`${VAR:-default}`, as the shell reads it: Pulumi.lab.yaml names the lab's folder this way."""
    monkeypatch.delenv("ML_DEPLOY_TEST_LAB", raising=False)
    rec = run(lab_like(config, docker_host="unix://${ML_DEPLOY_TEST_LAB:-/var/tmp/lab}/docker.sock", build_network="host"))
    assert rec.of_type("pulumi:providers:docker-build")[0].inputs["host"] == "unix:///var/tmp/lab/docker.sock"
    monkeypatch.setenv("ML_DEPLOY_TEST_LAB", "/run/other")
    rec = run(lab_like(config, docker_host="unix://${ML_DEPLOY_TEST_LAB:-/var/tmp/lab}/docker.sock", build_network="host"))
    assert rec.of_type("pulumi:providers:docker-build")[0].inputs["host"] == "unix:///run/other/docker.sock"
