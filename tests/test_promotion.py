"""Promotion: a stack runs the images and model versions another stack built, pinned by digest.

Under the mocks: what a promoted Azure or local stack registers (no build, the source's digests,
the pull grant on the source's registry, the same model versions) and what its config may say.
Through the real engine (Automation API, two local stacks in a temporary copy of the project):
`up` on the first, `ml-deploy promote` + `up` on the second, both serve the same bundle; a new
score.py in the first reaches the second only once it is promoted again.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

import pytest
import yaml
from pulumi import automation as auto

from cli import offline
from cli.call import call
from cli.promote import PromotionError, changes, pins_for, write_pins
from content.bundle import BundleMismatch, COMPLETE, copy_bundle, digest_of, manifest, write_bundle
from infra.schema import DIGEST_REF
from tests.helpers import ACR_PULL, ROOT, SEED, TEMPLATES, assert_rejected, copy_project, engine_environ, run_config

IMAGE = "docker-build:index:Image"
GROUP = "azure-native:containerinstance:ContainerGroup"
ROLE = "azure-native:authorization:RoleAssignment"
VERSION = "azure-native:machinelearningservices:ModelVersion"
DYNAMIC = "pulumi-python:dynamic:Resource"
STAGING = "organization/ml-deploy/staging"


# ---- under the mocks --------------------------------------------------------------------------

def promoted(config: dict[str, Any], source_outputs: dict[str, Any], source: str = "staging") -> dict[str, Any]:
    """`config` turned into a stack promoted from `source`: images without build keys, pins from its outputs."""
    config = copy.deepcopy(config)
    config["ml-deploy:images"] = [{"name": i["name"], "models": i["models"]} for i in config["ml-deploy:images"]]
    config["ml-deploy:promote_from"] = source
    config["ml-deploy:promoted"] = {
        "stack": source,
        "images": {name: source_outputs["image_digests"][name] for name in ("diabetes",)},
        "models": {name: m["version"] for name, m in source_outputs["models"].items()},
    }
    return config


@pytest.fixture
def staging(config) -> dict[str, Any]:
    """The outputs of the dev config deployed as stack `staging`."""
    return run_config(config, stack="staging").outputs


def run_prod(config: dict[str, Any], staging: dict[str, Any]):
    return run_config(config, stack="prod", stack_outputs={STAGING: staging})


def test_built_stacks_export_each_image_pinned_by_digest(config, run):
    rec = run(config)
    image = rec.of_type(IMAGE)[0]
    repository = image.inputs["tags"][0].rsplit(":", 1)[0]
    assert rec.outputs["image_digests"]["diabetes"] == f"{repository}@{image.outputs['digest']}"
    assert DIGEST_REF.match(rec.outputs["image_digests"]["diabetes"])
    # `images` is what the services run: the same reference by digest.
    assert rec.outputs["images"]["diabetes"] == rec.outputs["image_digests"]["diabetes"]


def test_promoted_azure_stack_builds_nothing_and_runs_the_source_digest(config, staging):
    rec = run_prod(promoted(config, staging), staging)
    assert rec.of_type(IMAGE) == []
    group = rec.of_type(GROUP)[0]
    assert group.inputs["containers"][0]["image"] == staging["image_digests"]["diabetes"]
    assert rec.outputs["image_digests"] == staging["image_digests"]
    assert [r.inputs["name"] for r in rec.reads if r.type == "pulumi:pulumi:StackReference"] == [STAGING]


def test_promoted_aci_service_pulls_from_the_source_registry_with_acrpull(config, staging):
    rec = run_prod(promoted(config, staging), staging)
    group = rec.of_type(GROUP)[0]
    assert group.inputs["imageRegistryCredentials"][0]["server"] == staging["workspace"]["registry"]
    grant = rec.by_name(ROLE, "diabetes-aci-acrpull")
    assert grant.inputs["scope"] == staging["workspace"]["registry_id"]
    assert grant.inputs["roleDefinitionId"].endswith(f"/roleDefinitions/{ACR_PULL}")
    # The role definition is referenced in the registry's own subscription.
    subscription = staging["workspace"]["registry_id"].split("/")[2]
    assert grant.inputs["roleDefinitionId"].startswith(f"/subscriptions/{subscription}/")
    # The stack's own registry is not where its images are; its outputs say where they are.
    assert rec.outputs["workspace"]["registry"] != staging["workspace"]["registry"]
    assert rec.outputs["workspace"]["image_registry_id"] == staging["workspace"]["registry_id"]


def test_promoted_aks_cluster_gets_acrpull_on_the_source_registry(config, staging):
    config["ml-deploy:aks_clusters"] = [{"name": "prod", "agent_count": 3, "vm_size": "Standard_D4s_v5"}]
    config["ml-deploy:services"] = [{"name": "diabetes-aks", "image": "diabetes", "target": "aks", "cluster": "prod"}]
    rec = run_prod(promoted(config, staging), staging)
    grant = rec.by_name(ROLE, "prod-acrpull")
    assert grant.inputs["scope"] == staging["workspace"]["registry_id"]
    deployment = rec.of_type("kubernetes:apps/v1:Deployment")[0]
    assert deployment.inputs["spec"]["template"]["spec"]["containers"][0]["image"] == staging["image_digests"]["diabetes"]


def test_promoted_stack_registers_the_same_model_versions(config, staging):
    rec = run_prod(promoted(config, staging), staging)
    assert rec.of_type(VERSION)[0].inputs["version"] == staging["models"]["diabetes-ridge"]["version"]
    assert rec.outputs["models"]["diabetes-ridge"]["version"] == staging["models"]["diabetes-ridge"]["version"]


def test_a_stack_promoted_from_a_promoted_stack_pulls_from_the_first_registry(config, staging):
    middle = run_prod(promoted(config, staging), staging).outputs
    rec = run_config(promoted(config, middle, source="prod"), stack="live",
                     stack_outputs={"organization/ml-deploy/prod": middle})
    assert rec.by_name(ROLE, "diabetes-aci-acrpull").inputs["scope"] == staging["workspace"]["registry_id"]
    assert rec.of_type(GROUP)[0].inputs["containers"][0]["image"] == staging["image_digests"]["diabetes"]


def test_model_bytes_that_differ_from_the_source_are_rejected_naming_the_model(config, staging, tmp_path, model_files):
    other = tmp_path / "diabetes-ridge.pkl"
    other.write_bytes(model_files[0].read_bytes() + b"retrained")
    prod = promoted(config, staging)
    prod["ml-deploy:models"][0]["path"] = str(other)
    assert_rejected(prod, "models[0].path", "model 'diabetes-ridge'")
    assert_rejected(prod, "models[0].path", f"runs version {staging['models']['diabetes-ridge']['version']}")


def test_promote_from_without_pins_asks_for_ml_deploy_promote(config, staging):
    prod = promoted(config, staging)
    del prod["ml-deploy:promoted"]
    assert_rejected(prod, "promoted", "./ml-deploy promote --from staging --to dev")


def test_pins_without_promote_from_are_rejected(config, staging):
    prod = promoted(config, staging)
    del prod["ml-deploy:promote_from"]
    prod["ml-deploy:images"] = config["ml-deploy:images"]
    assert_rejected(prod, "promoted", "only with promote_from")


def test_a_stack_cannot_promote_from_itself(config, staging):
    prod = promoted(config, staging, source="dev")
    assert_rejected(prod, "promote_from", "cannot promote from itself")


def test_a_promoted_stack_takes_no_build_keys(config, staging):
    prod = promoted(config, staging)
    prod["ml-deploy:images"][0]["execution_script"] = "scoring_templates/sklearn/score.py"
    assert_rejected(prod, "images[0].execution_script", "not used on a promoted stack")


def test_pins_must_be_digests_of_the_declared_images(config, staging):
    prod = promoted(config, staging)
    repository = staging["image_digests"]["diabetes"].split("@", 1)[0]
    prod["ml-deploy:promoted"]["images"]["diabetes"] = f"{repository}:latest"  # a tag, not a digest
    assert_rejected(prod, "promoted.images", "not an image reference pinned by digest")
    prod = promoted(config, staging)
    prod["ml-deploy:promoted"]["images"]["other"] = staging["image_digests"]["diabetes"]
    assert_rejected(prod, "promoted.images.other", "no image named 'other'")
    prod = promoted(config, staging)
    prod["ml-deploy:promoted"]["stack"] = "dev-2"
    assert_rejected(prod, "promoted.stack", "pinned from 'dev-2'")


def test_iot_edge_services_are_refused_on_a_promoted_stack(config, staging):
    prod = promoted(config, staging)
    prod["ml-deploy:iot_hubs"] = [{"name": "factory", "sku": "S1", "capacity": 1}]
    prod["ml-deploy:services"] = [{"name": "diabetes-edge", "image": "diabetes", "target": "iot_edge",
                                   "hub": "factory", "devices": ["line-1"]}]
    assert_rejected(prod, "services[0].target", "cannot run on a promoted stack")


def test_a_pin_outside_the_source_registry_fails_the_deployment(config, staging):
    prod = promoted(config, staging)
    digest = staging["image_digests"]["diabetes"].split("@", 1)[1]
    prod["ml-deploy:promoted"]["images"]["diabetes"] = f"elsewhere.azurecr.io/diabetes@{digest}"
    with pytest.raises(Exception, match="is not in .*the registry stack 'staging' runs its images from"):
        run_prod(prod, staging)


def local(config: dict[str, Any], path: str) -> dict[str, Any]:
    config = copy.deepcopy(config)
    config["ml-deploy:workspace"] = {"name": "local", "kind": "local", "path": path, "protect": False}
    config["ml-deploy:services"] = [{"name": "diabetes-local", "image": "diabetes", "target": "local"}]
    return config


def test_promoted_local_stack_copies_the_pinned_bundle_and_serves_the_copy(config):
    source = run_config(local(config, ".ml-deploy/test-source"), stack="staging").outputs
    rec = run_prod(promoted(local(config, ".ml-deploy/test-promoted"), source), source)
    assert not rec.of_type("ml-deploy:index:LocalImage")
    copied = rec.by_name(DYNAMIC, "diabetes-bundle")
    digest = source["image_digests"]["diabetes"].split("@sha256:")[1]
    assert copied.inputs["digest"] == digest and copied.inputs["tag"] == digest[:16]
    assert copied.inputs["source_store"] == source["workspace"]["image_store"]
    assert copied.inputs["store"] == rec.outputs["workspace"]["image_store"] != source["workspace"]["image_store"]
    # The service runs the copy (whose path only the engine knows: see the test through the engine below).
    process = rec.by_name(DYNAMIC, "diabetes-local-process")
    assert process.inputs["model_dir"] == f"azureml-models/diabetes-ridge/{source['models']['diabetes-ridge']['version']}"
    assert rec.outputs["images"]["diabetes"] == source["images"]["diabetes"]
    assert rec.outputs["image_digests"] == source["image_digests"]
    # Its venv is made from the copy's own environment file, named by the pinned tag.
    venv = rec.by_name(DYNAMIC, "diabetes-venv")
    assert venv.inputs["key"] == f"bundle-{digest[:16]}" and venv.inputs.get("requirements") is None
    assert process.inputs["python"] == str(Path(venv.inputs["cache"]) / f"bundle-{digest[:16]}" / "bin" / "python")


def test_a_promoted_bundle_venv_is_made_from_the_bundles_own_environment(tmp_path):
    from content.bundle import EnvironmentFile, scoring_bundle
    from providers.local import bundle_environment

    env = tmp_path / "requirements.txt"
    env.write_text("# the script's one need\nsix>=1.16\n")
    bundle = write_bundle(tmp_path / "bundle", scoring_bundle(
        TEMPLATES / "sklearn" / "score.py", EnvironmentFile(env, pip=True), [], ROOT / "serving", "base"))
    env.write_text("other==1\n")  # the working tree moves on; the bundle keeps what was pinned
    interpreter, lines, source = bundle_environment(bundle)
    assert lines[0] == "six>=1.16" and "other==1" not in lines
    assert lines[1:] == [line for line in lines[1:] if line in (ROOT / "serving" / "requirements.txt").read_text()]
    assert source == str(bundle / "app" / "requirements.txt") and Path(interpreter).exists()
    conda = tmp_path / "env.yml"
    conda.write_text("dependencies:\n  - cudatoolkit=11.8\n")
    bad = write_bundle(tmp_path / "bad", scoring_bundle(
        TEMPLATES / "sklearn" / "score.py", EnvironmentFile(conda), [], ROOT / "serving", "base"))
    with pytest.raises(RuntimeError, match=r"promoted bundle .*bad.*conda package 'cudatoolkit=11.8'"):
        bundle_environment(bad)


def test_a_local_stack_cannot_pin_a_registry_image(config, staging):
    prod = promoted(local(config, ".ml-deploy/test-promoted"), staging)
    assert_rejected(prod, "promoted.images.diabetes", "is not a local image")


def test_offline_plan_of_a_promoted_stack_reads_the_plan_of_its_source(config, tmp_path):
    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    (tmp_path / "Pulumi.staging.yaml").write_text(yaml.safe_dump({"config": config}))
    outputs = offline.source_outputs({"ml-deploy:promote_from": "staging"}, root=tmp_path)
    assert set(outputs) == {STAGING}
    assert outputs[STAGING]["image_digests"] == offline.run(values, stack="staging").outputs["image_digests"]
    (tmp_path / "Pulumi.staging.yaml").write_text(yaml.safe_dump({"config": {**config, "ml-deploy:promote_from": "prod"}}))
    with pytest.raises(ValueError, match="promotion cycle: prod -> staging -> prod"):
        offline.source_outputs({"ml-deploy:promote_from": "staging"}, root=tmp_path, chain=("prod",))


# ---- the bundle copy --------------------------------------------------------------------------

@pytest.fixture
def bundle(tmp_path: Path) -> tuple[Path, str]:
    script = tmp_path / "score.py"
    script.write_text("def init():\n    pass\n")
    sources = {PurePosixPath("app/score.py"): script, PurePosixPath("Dockerfile"): "FROM scratch\n"}
    from content.bundle import content_digest

    return write_bundle(tmp_path / "store" / "img" / "tag", sources), content_digest(sources)


def test_copy_verifies_the_digest_and_leaves_what_a_service_wrote_behind(bundle, tmp_path):
    source, digest = bundle
    (source / "app" / "__pycache__").mkdir()
    (source / "app" / "__pycache__" / "score.cpython-311.pyc").write_bytes(b"\0")
    copied = copy_bundle(source, tmp_path / "copy", digest)
    assert sorted(str(p) for p in manifest(copied)) == ["Dockerfile", "app/score.py"]
    assert not (copied / "app" / "__pycache__").exists()
    assert digest_of({rel: bytes.fromhex(sha) for rel, sha in manifest(copied).items()}) == digest


def test_copy_refuses_changed_bytes_and_leaves_nothing(bundle, tmp_path):
    source, digest = bundle
    (source / "app" / "score.py").write_text("def init():\n    raise SystemExit\n")
    with pytest.raises(BundleMismatch, match="changed since the bundle was written"):
        copy_bundle(source, tmp_path / "copy", digest)
    assert not any(tmp_path.glob("copy*"))


def test_copy_of_a_bundle_written_without_a_manifest_checks_the_digest(bundle, tmp_path):
    source, digest = bundle
    (source / COMPLETE).write_text("")  # as bundles were written before the manifest
    assert copy_bundle(source, tmp_path / "copy", digest) == tmp_path / "copy"
    with pytest.raises(BundleMismatch, match="not sha256:" + "0" * 64):
        copy_bundle(source, tmp_path / "other", "0" * 64)


# ---- ml-deploy promote: the pins and the stack file ----------------------------------------------

STACK_FILE = """\
# The promoted stack: comments and order survive `ml-deploy promote`.
config:
  ml-deploy:workspace:
    name: prod   # its own workspace
    kind: local
  ml-deploy:models:
    - name: diabetes-ridge
      path: models/diabetes-ridge.pkl
  ml-deploy:images:
    - name: diabetes
      models: [diabetes-ridge]
  # Services follow.
  ml-deploy:services:
    - {name: diabetes-local, image: diabetes, target: local}
encryptionsalt: v1:abc
"""
# Pulumi's own layout when it rewrites a stack file: sequences at their key's indentation.
PULUMI_LAYOUT = """\
encryptionsalt: v1:abc
config:
  ml-deploy:images:
  - models:
    - diabetes-ridge
    name: diabetes
  ml-deploy:models:
  - name: diabetes-ridge
    path: models/diabetes-ridge.pkl
"""
PINS = {"stack": "staging", "images": {"diabetes": "local/diabetes@sha256:" + "a" * 64},
        "models": {"diabetes-ridge": "1e5000000000"}}


@pytest.mark.parametrize("text", [STACK_FILE, PULUMI_LAYOUT], ids=["hand-written", "pulumi-written"])
def test_pins_are_written_beside_the_other_keys(tmp_path, text):
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(text)
    written = write_pins(path, "staging", "prod", PINS)
    data = yaml.safe_load(written)
    assert data["config"]["ml-deploy:promoted"] == PINS  # "1e5000000000" stays a string
    assert data["config"]["ml-deploy:promote_from"] == "staging"
    before = yaml.safe_load(text)
    assert {k: v for k, v in data["config"].items() if "promot" not in k} == before["config"]
    assert data["encryptionsalt"] == "v1:abc"
    for line in text.splitlines():
        assert line in written.splitlines()


def test_promoting_again_replaces_the_pins_in_place(tmp_path):
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(STACK_FILE)
    path.write_text(write_pins(path, "staging", "prod", PINS))
    newer = {**PINS, "images": {"diabetes": "local/diabetes@sha256:" + "b" * 64}}
    written = write_pins(path, "staging", "prod", newer)
    assert yaml.safe_load(written)["config"]["ml-deploy:promoted"] == newer
    assert written.count("ml-deploy:promoted:") == 1 and written.count("ml-deploy:promote_from:") == 1
    assert "# Services follow." in written


def test_pins_name_what_the_source_stack_lacks():
    raw = yaml.safe_load(STACK_FILE)["config"]
    raw = {k.split(":", 1)[1]: v for k, v in raw.items()}
    with pytest.raises(PromotionError, match=r"images\[0\]: stack 'staging' runs no image named 'diabetes'"):
        pins_for(raw, "staging", {"image_digests": {"other": "x"}, "models": {"diabetes-ridge": {"version": "v"}}})
    with pytest.raises(PromotionError, match="run `pulumi up --stack staging` first"):
        pins_for(raw, "staging", {"images": {}})


def test_changes_compare_what_the_target_runs_with_the_pins():
    deployed = {"image_digests": {"diabetes": "local/diabetes@sha256:" + "b" * 64},
                "models": {"diabetes-ridge": {"version": "1e5000000000"}}}
    rows = {(c.kind, c.name): (c.old, c.new) for c in changes(PINS, deployed)}
    assert rows[("image", "diabetes")] == (deployed["image_digests"]["diabetes"], PINS["images"]["diabetes"])
    assert rows[("model", "diabetes-ridge")] == ("1e5000000000", "1e5000000000")
    assert {c.old for c in changes(PINS, None)} == {"(not deployed)"}


# ---- through the real engine: two local stacks ----------------------------------------------------

TARGET = "local-promoted"
TARGET_FILE = """\
# Runs what the `local` stack runs, from its own workspace folder.
config:
  ml-deploy:workspace:
    name: promoted
    kind: local
    path: .ml-deploy/promoted
    protect: false
  ml-deploy:models:
    - name: diabetes-ridge
      path: models/diabetes-ridge.pkl
  ml-deploy:images:
    - name: diabetes
      models: [diabetes-ridge]
  ml-deploy:services:
    - name: diabetes-local
      image: diabetes
      target: local
      auth_enabled: true
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, model_files) -> Path:
    work = copy_project(tmp_path_factory.mktemp("project"), model_files[0])
    (work / f"Pulumi.{TARGET}.yaml").write_text(TARGET_FILE)
    return work


@pytest.fixture(scope="module")
def engine_env(project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    state = tmp_path_factory.mktemp("state")
    env = engine_environ(project, state)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the Automation API runs `pulumi` with this process's environment
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def stacks(project: Path, engine_env: dict[str, str]) -> Iterator[tuple[auto.Stack, auto.Stack]]:
    ws = auto.LocalWorkspace(work_dir=str(project), pulumi_home=engine_env["PULUMI_HOME"], env_vars=engine_env,
                             pulumi_command=auto.PulumiCommand())
    source = auto.Stack.create_or_select("local", ws)
    target = auto.Stack.create_or_select(TARGET, ws)
    try:
        yield source, target
    finally:
        target.destroy(on_output=lambda _: None)
        source.destroy(on_output=lambda _: None)


def promote(project: Path, env: dict[str, str], *extra: str) -> str:
    """`ml-deploy promote --from local --to local-promoted` as a user runs it, in the project copy."""
    result = subprocess.run([sys.executable, "-m", "cli", "promote", "--from", "local", "--to", TARGET, *extra],
                            cwd=project, env={**os.environ, **env}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def score(stack: auto.Stack) -> list[float]:
    out = stack.outputs()["services"].value["diabetes-local"]
    status, body = call(out["scoring_uri"], json.dumps(SEED).encode(), out["primary_key"])
    assert status == 200, body
    return json.loads(body)


def served_bundle(stack: auto.Stack) -> tuple[str, str]:
    """(the bundle folder the service runs, the digest of the bytes in it, from its manifest)."""
    bundle = next(r["outputs"]["bundle"] for r in stack.export_stack().deployment["resources"]
                  if r["urn"].endswith("diabetes-local-process"))
    hashes = {rel: bytes.fromhex(sha) for rel, sha in manifest(Path(bundle)).items()}
    return bundle, digest_of(hashes)


def test_promoted_stack_serves_the_source_bundle(stacks, project, engine_env):
    source, target = stacks
    assert source.up(on_output=lambda _: None).summary.result == "succeeded"
    shown = promote(project, engine_env)
    digest_ref = source.outputs()["image_digests"].value["diabetes"]
    assert re.search(r"image diabetes\s+\(not deployed\)\n\s+-> " + re.escape(digest_ref), shown), shown
    pinned = yaml.safe_load((project / f"Pulumi.{TARGET}.yaml").read_text())["config"]["ml-deploy:promoted"]
    assert pinned["images"]["diabetes"] == digest_ref
    assert target.up(on_output=lambda _: None).summary.result == "succeeded"

    assert score(target) == score(source)
    assert target.outputs()["image_digests"].value == source.outputs()["image_digests"].value
    source_bundle, source_digest = served_bundle(source)
    target_bundle, target_digest = served_bundle(target)
    assert target_bundle != source_bundle and target_bundle.startswith(str(project / ".ml-deploy" / "promoted"))
    assert source_digest == target_digest == digest_ref.split("@sha256:")[1]


def test_a_new_script_reaches_the_promoted_stack_only_when_promoted_again(stacks, project, engine_env):
    source, target = stacks
    before = score(target)
    pinned = target.outputs()["image_digests"].value["diabetes"]
    script = project / "scoring_templates" / "sklearn" / "score.py"
    script.write_text(script.read_text().replace(
        "return model.predict(data).tolist()", "return [round(p, 1) for p in model.predict(data).tolist()]"))
    source.up(on_output=lambda _: None)
    rounded = score(source)
    assert rounded == [round(p, 1) for p in before] and rounded != before

    # The source has moved on (and deleted its old bundle); the promoted stack has nothing to do.
    preview = target.preview(on_output=lambda _: None)
    assert set(preview.change_summary) <= {"same", "read"}, preview.change_summary
    target.up(on_output=lambda _: None)
    assert score(target) == before
    assert target.outputs()["image_digests"].value["diabetes"] == pinned

    shown = promote(project, engine_env, "--dry-run")
    assert "1 of 2 would change" in shown and f"{pinned}\n" in shown
    assert yaml.safe_load((project / f"Pulumi.{TARGET}.yaml").read_text())[
        "config"]["ml-deploy:promoted"]["images"]["diabetes"] == pinned

    promote(project, engine_env)
    assert target.up(on_output=lambda _: None).summary.result == "succeeded"
    assert score(target) == rounded
    assert target.outputs()["image_digests"].value == source.outputs()["image_digests"].value
    assert served_bundle(target)[1] == served_bundle(source)[1]
