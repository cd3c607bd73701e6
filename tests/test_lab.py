"""The lab (scripts/lab) for real: an image built through its Docker engine and pushed to its registry, a
ConfigMap through its API server, and the provider plugins where the Pulumi engine looks for them.

Skipped, with the lab's own status as the reason, unless `scripts/lab up` has run and all of it is up.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import uuid
from importlib import metadata
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers import engine_dir, lab_environ

pytestmark = pytest.mark.lab  # scripts/test runs these beside the others


@pytest.fixture(scope="module")
def lab_env() -> dict[str, str]:
    return lab_environ()


def run(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env={**os.environ, **env}, check=True, capture_output=True, text=True, **kwargs)


@pytest.fixture
def pushed_image(lab_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(repository, tag) of a small image built FROM the lab's base image and pushed; removed after."""
    registry = lab_env["ML_DEPLOY_LAB_REGISTRY"]
    repository, tag = "ml-deploy/lab-smoke", uuid.uuid4().hex[:12]
    ref = f"{registry}/{repository}:{tag}"
    # pip over the network inside the build is the point: the base image must trust this machine's
    # CA, which intercepts TLS to the package registries.
    (tmp_path / "Dockerfile").write_text(
        f"FROM {lab_env['ML_DEPLOY_LAB_BASE_IMAGE']}\n"
        "RUN python3 -m venv /opt/venv && /opt/venv/bin/pip download --no-deps --dest /opt/wheels six==1.16.0\n"
        f'RUN echo "{tag}" > /smoke\n'
    )
    run(["docker", "build", "--network", "host", "-t", ref, str(tmp_path)], lab_env)
    run(["docker", "push", ref], lab_env)
    yield repository, tag
    digest = run(["docker", "image", "inspect", "-f", "{{index .RepoDigests 0}}", ref], lab_env).stdout.strip()
    delete = urllib.request.Request(f"http://{registry}/v2/{repository}/manifests/{digest.split('@')[1]}",
                                    method="DELETE")
    urllib.request.urlopen(delete, timeout=10).close()
    run(["docker", "image", "rm", ref], lab_env)


def test_image_from_base_image_is_served_by_the_registry_with_the_pushed_digest(
    lab_env: dict[str, str], pushed_image: tuple[str, str]
) -> None:
    repository, tag = pushed_image
    registry = lab_env["ML_DEPLOY_LAB_REGISTRY"]
    ref = f"{registry}/{repository}:{tag}"
    pushed = run(["docker", "image", "inspect", "-f", "{{json .RepoDigests}}", ref], lab_env).stdout
    request = urllib.request.Request(
        f"http://{registry}/v2/{repository}/manifests/{tag}",
        headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                           "application/vnd.oci.image.manifest.v1+json"},
        method="HEAD",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        served = response.headers["Docker-Content-Digest"]
    assert served.startswith("sha256:")
    assert [f"{registry}/{repository}@{served}"] == json.loads(pushed)
    tags = json.load(urllib.request.urlopen(f"http://{registry}/v2/{repository}/tags/list", timeout=10))
    assert tag in tags["tags"]


def test_configmap_round_trips_through_the_api_server(lab_env: dict[str, str]) -> None:
    kubectl = lab_env["ML_DEPLOY_LAB_KUBECTL"]
    name = f"lab-smoke-{uuid.uuid4().hex[:8]}"
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"},
                "data": {"model": "diabetes-ridge", "version": "1"}}
    run([kubectl, "apply", "-f", "-"], lab_env, input=json.dumps(manifest))
    try:
        read = json.loads(run([kubectl, "get", "configmap", name, "-n", "default", "-o", "json"], lab_env).stdout)
        assert read["data"] == manifest["data"]
        assert read["metadata"]["uid"]
    finally:
        run([kubectl, "delete", "configmap", name, "-n", "default"], lab_env)


def plugin_version(package: str) -> str:
    """The plugin version an installed provider SDK asks the engine for (its pulumi-plugin.json)."""
    files = metadata.files(package) or []
    plugin_json = next(f for f in files if f.name == "pulumi-plugin.json")
    return json.loads(Path(str(plugin_json.locate())).read_text())["version"]


def test_plugins_are_where_the_engine_looks_at_the_versions_the_sdks_ask_for(lab_env: dict[str, str]) -> None:
    engine = engine_dir()
    env = {"PULUMI_HOME": lab_env["ML_DEPLOY_LAB_PULUMI_HOME"], "PULUMI_SKIP_UPDATE_CHECK": "true"}
    listed = json.loads(run([f"{engine}/pulumi", "plugin", "ls", "--json"], env).stdout)
    installed = {(p["name"], p["version"]) for p in listed if p["kind"] == "resource"}
    for package, name in (("pulumi-docker-build", "docker-build"), ("pulumi-kubernetes", "kubernetes")):
        assert (name, plugin_version(package)) in installed, f"{package} asks for a plugin not installed"
