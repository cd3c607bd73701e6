"""`ml-deploy diff`: real edits (a script, a model, services added and removed, resources, names)
planned under the mocks on both sides and classified as Pulumi's engine and providers would."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli import diff
from tests.helpers import ROOT, TEMPLATES, git_project, run_config

GROUP = "azure-native:containerinstance:ContainerGroup"
IMAGE = "docker-build:index:Image"
DYNAMIC = "pulumi-python:dynamic:Resource"


def plan(config: dict, stack: str = "dev") -> list[dict]:
    """The offline plan of `config` now, as the recorder writes it."""
    return diff.as_records(run_config(config, stack))


def plan_diff(before: dict | list[dict], after: dict, stack: str = "dev") -> diff.StackDiff:
    base = before if isinstance(before, list) else plan(before, stack)
    return diff.compare_resources(base, plan(after, stack), stack)


def ops(d: diff.StackDiff) -> dict[str, str]:
    return {c.name: c.op for c in d.changes}


def change(d: diff.StackDiff, name: str) -> diff.Change:
    return next(c for c in d.changes if c.name == name)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    copy_ = tmp_path / "score.py"
    shutil.copy(TEMPLATES / "sklearn" / "score.py", copy_)
    return copy_


@pytest.fixture
def model(tmp_path: Path, model_files) -> Path:
    copy_ = tmp_path / "diabetes-ridge.pkl"
    shutil.copy(model_files[0], copy_)
    return copy_


def local(config: dict, tmp_path: Path) -> dict:
    config["ml-deploy:workspace"] = {"name": "local", "kind": "local", "path": str(tmp_path / "ws"), "protect": False}
    config["ml-deploy:services"] = [{"name": "diabetes-local", "image": "diabetes", "target": "local", "auth_enabled": True}]
    return config


def test_nothing_changed_is_all_unchanged(config):
    d = plan_diff(config, copy.deepcopy(config))
    assert d.changes == [] and d.unchanged == 22


def test_new_score_py_updates_the_image_and_rolls_the_aci_group_in_place(config, script):
    config["ml-deploy:images"][0]["execution_script"] = str(script)
    before = plan(config)
    script.write_text(script.read_text() + "\n# a new line\n")
    d = plan_diff(before, config)
    # docker-build's Image diff only ever updates (it rebuilds and pushes); an image is not an input
    # Azure refuses to update on a container group.
    assert ops(d) == {"diabetes-image": "update", "diabetes-aci-group": "update"}
    # The build context is a folder named by the content tag, like the pushed tag.
    assert [p.path for p in change(d, "diabetes-image").paths] == ["context.location", "dockerfile.location", "tags[0]"]
    assert [p.path for p in change(d, "diabetes-aci-group").paths] == ["containers[0].image"]


def test_new_score_py_replaces_the_local_bundle_and_restarts_the_service(config, script, tmp_path):
    config = local(config, tmp_path)
    config["ml-deploy:images"][0]["execution_script"] = str(script)
    before = plan(config, "local")
    script.write_text(script.read_text() + "\n# a new line\n")
    d = plan_diff(before, config, "local")
    # What the real engine previews for the same edit (tests/test_local_stack.py): the bundle's
    # dynamic provider replaces on a new tag, the service's updates on a new bundle path.
    assert ops(d) == {"diabetes-bundle": "replace", "diabetes-local-process": "update"}
    assert change(d, "diabetes-bundle").replaced_by == ["tag (dynamic provider)"]
    # The bundle's folder is named by its tag, and the service runs from that folder.
    assert [p.path for p in change(d, "diabetes-local-process").paths] == ["bundle"]


def test_new_model_bytes_replace_the_version_and_its_blob(config, model):
    config["ml-deploy:models"][0]["path"] = str(model)
    before = plan(config)
    model.write_bytes(model.read_bytes() + b"\n")
    d = plan_diff(before, config)
    assert ops(d) == {"diabetes-ridge-diabetes-ridge.pkl": "replace", "diabetes-ridge-version": "replace",
                      "diabetes-image": "update", "diabetes-aci-group": "update"}
    # The version is a path parameter of the model version (and of the blob's name).
    assert "version (provider)" in change(d, "diabetes-ridge-version").replaced_by
    assert "blobName (provider)" in change(d, "diabetes-ridge-diabetes-ridge.pkl").replaced_by


def test_a_new_service_only_creates(config):
    after = copy.deepcopy(config)
    after["ml-deploy:services"].append(dict(config["ml-deploy:services"][0], name="second-aci"))
    d = plan_diff(config, after)
    assert set(ops(d).values()) == {"create"}
    assert {c.type for c in d.changes} >= {GROUP, "ml-deploy:index:AciService",
                                           "random:index/randomPassword:RandomPassword"}
    assert all(c.name.startswith("second-aci") for c in d.changes)


def test_a_removed_service_only_deletes(config):
    before = copy.deepcopy(config)
    before["ml-deploy:services"].append(dict(config["ml-deploy:services"][0], name="second-aci"))
    d = plan_diff(before, config)
    assert set(ops(d).values()) == {"delete"} and "second-aci-group" in ops(d)


def test_more_memory_replaces_the_aci_group_deleting_it_first_and_hides_the_secret_value(config):
    after = copy.deepcopy(config)
    after["ml-deploy:services"][0]["memory_gb"] = 2
    d = plan_diff(config, after)
    assert ops(d) == {"diabetes-aci-group": "replace"}
    group = change(d, "diabetes-aci-group")
    # azure-native alone would update in place, which Azure refuses for CPU/memory: the program
    # asks for the replacement, and deletes first since the group's name is fixed.
    assert group.replaced_by == ["containers[0].resources.requests.memoryInGB (program's replace_on_changes)"]
    assert group.delete_before_replace
    # The container list also holds the auth keys: exactly those are hidden, the memory is shown
    # (as the integer it is).
    text = diff.render_text([d], "base")
    assert "containers[0].resources.requests.memoryInGB: 1 => 2" in text
    assert "2.0" not in text and "[secret]" not in text  # the keys did not change, so they are not listed


def test_created_resources_show_their_inputs_with_only_the_secret_values_hidden(config):
    base = [r for r in plan(config) if r["type"] != GROUP]
    d = diff.compare_resources(base, plan(config), "dev")
    group = change(d, "diabetes-aci-group")
    assert group.op == "create"
    shown = {p.path: p for p in group.paths}
    assert shown["containers[0].resources.requests.cpu"].new == 1
    assert shown["containers[0].environmentVariables[13].secureValue"].secret
    assert not shown["containers[0].image"].secret
    text = diff.render_text([d], "base")
    assert "containers[0].environmentVariables[13].secureValue: [secret]" in text
    assert 'containers[0].environmentVariables[13].name: "SCORING_AUTH_KEYS"' in text
    assert "containers[0].resources.requests.memoryInGB: 1" in text
    keys = [p.new for p in group.paths if p.secret]
    assert keys and not any(str(k) in text for k in keys)


def test_a_changed_tag_is_an_update_that_shows_both_values(config):
    after = copy.deepcopy(config)
    after["ml-deploy:services"][0]["description"] = "scores diabetes progression"
    d = plan_diff(config, after)
    assert set(ops(d).values()) == {"update"}
    group = change(d, "diabetes-aci-group")
    # A value added where there was none is walked down to its scalars: nothing is shown cut.
    assert [(p.path, p.old, p.new) for p in group.paths] == [("tags.description", None, "scores diabetes progression")]
    assert 'tags.description: (absent) => "scores diabetes progression"' in diff.render_text([d], "base")


def test_a_renamed_workspace_deletes_and_creates_everything_it_names(config):
    # The workspace name is also the components' logical name: new URNs, and no aliases.
    after = copy.deepcopy(config)
    after["ml-deploy:workspace"]["name"] = "mlws2"
    d = plan_diff(config, after)
    assert change(d, "mlws-storage").op == "delete" and change(d, "mlws2-storage").op == "create"
    assert not [c for c in d.changes if c.op in ("update", "replace") and c.name.startswith("mlws")]


def test_deleting_a_protected_resource_is_flagged(config):
    config["ml-deploy:workspace"]["protect"] = True
    after = copy.deepcopy(config)
    after["ml-deploy:workspace"]["name"] = "mlws2"
    d = plan_diff(config, after)
    assert any("refuses to delete" in w for w in change(d, "mlws-storage").warnings)
    assert not change(d, "mlws-insights").warnings  # Application Insights is not protected


@pytest.fixture
def aks(config):
    config["ml-deploy:aks_clusters"] = [{"name": "prod", "agent_count": 3, "vm_size": "Standard_D4s_v5"}]
    config["ml-deploy:services"] = [{"name": "diabetes-aks", "image": "diabetes", "target": "aks", "cluster": "prod",
                                     "primary_key": "k" * 32, "secondary_key": "s" * 32}]
    return config


def test_a_new_namespace_replaces_the_kubernetes_objects(aks):
    after = copy.deepcopy(aks)
    after["ml-deploy:services"][0]["namespace"] = "scoring"
    d = plan_diff(aks, after)
    assert change(d, "diabetes-aks-deployment").op == "replace"
    assert "metadata.namespace (provider)" in change(d, "diabetes-aks-deployment").replaced_by
    assert change(d, "prod-ns-scoring").op == "create" and change(d, "prod-ns-ml-deploy").op == "delete"


def test_a_new_key_replaces_the_kubernetes_secret_without_showing_it(aks):
    after = copy.deepcopy(aks)
    after["ml-deploy:services"][0]["primary_key"] = "n" * 32
    d = plan_diff(aks, after)
    secret = change(d, "diabetes-aks-secret")
    # pulumi-kubernetes replaces a Secret whose data changes.
    assert secret.op == "replace" and secret.replaced_by == ["stringData.auth-keys (provider)"]
    for rendered in (diff.render_text([d], "b"), diff.render_markdown([d], "b")):
        assert "n" * 32 not in rendered and "k" * 32 not in rendered


def test_a_new_node_size_is_planned_as_an_update_azure_refuses(aks):
    after = copy.deepcopy(aks)
    after["ml-deploy:aks_clusters"][0]["vm_size"] = "Standard_D8s_v5"
    d = plan_diff(aks, after)
    cluster = change(d, "prod-cluster")
    assert cluster.op == "update"
    assert any("agentPoolProfiles[0].vmSize" in w and "in place" in w for w in cluster.warnings)


def test_markdown_is_labelled_offline_and_carries_the_marker(config):
    after = copy.deepcopy(config)
    after["ml-deploy:services"][0]["memory_gb"] = 2
    md = diff.render_markdown([plan_diff(config, after)], "main (abc)")
    assert md.startswith(diff.MARKER)
    assert "Computed offline" in md and "Nothing was compared with cloud state" in md
    assert "| `dev` | 0 | 0 | 1 | 0 | 21 |" in md


# ---- the command on a real git repository --------------------------------------------------------

def test_diff_command_compares_a_commit_with_the_working_tree(tmp_path: Path, model_files):
    """A copy of the project as a git repository: commit, edit score.py and memory_gb, run the command."""
    repo = git_project(tmp_path / "repo", model_files[0])

    script = repo / "scoring_templates" / "sklearn" / "score.py"
    script.write_text(script.read_text() + "\n# a new line\n")
    stack_file = repo / "Pulumi.dev.yaml"
    stack = yaml.safe_load(stack_file.read_text())
    stack["config"]["ml-deploy:services"][0]["memory_gb"] = 2
    stack_file.write_text(yaml.safe_dump(stack))

    done = subprocess.run([sys.executable, "-m", "cli", "diff", "--base", "HEAD", "--stack", "dev", "--markdown"],
                          cwd=repo, env={**os.environ, "PYTHONPATH": str(repo)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    md = done.stdout
    assert md.startswith(diff.MARKER) and "`HEAD (" in md
    # The image is rebuilt (update) and the group replaced for its memory (its image change rides along);
    # the online endpoint's deployment moves to a new environment version (created, the old one deleted
    # after), and its traffic split is not touched.
    assert "| `dev` | 1 | 2 | 1 | 1 | 23 |" in md
    assert "| update | `diabetes-endpoint-blue` |" in md and "diabetes-endpoint-traffic" not in md
    assert "| replace | `diabetes-aci-group` |" in md and "(deleted first)" in md
    assert "| update | `diabetes-image` |" in md


# ---- stacks that fail, appear or vanish; long output ----------------------------------------------------

def test_a_stack_the_working_tree_breaks_fails_the_command_and_a_broken_base_does_not(config):
    good = {"resources": plan(config)}
    broken = {"error": "ConfigError: invalid stack config:\n  services[0].memory_gb: Input should be greater than 0"}
    [head_broke] = diff.compare({"dev": good}, {"dev": broken}, ["dev"])
    [base_broke] = diff.compare({"dev": broken}, {"dev": good}, ["dev"])
    assert head_broke.head_failed and "head: ConfigError" in (head_broke.error or "")
    assert not base_broke.head_failed and "base: ConfigError" in (base_broke.error or "")
    assert "not compared" in diff.render_text([head_broke], "b")
    # The same failure on both sides (a stack needing what this machine lacks) is not this change's.
    [both_broke] = diff.compare({"dev": broken}, {"dev": broken}, ["dev"])
    assert not both_broke.head_failed and "not compared" in diff.render_text([both_broke], "b")
    other = {"error": "ConfigError: invalid stack config:\n  services[0].cpu_cores: Input should be greater than 0"}
    [worse] = diff.compare({"dev": broken}, {"dev": other}, ["dev"])
    assert worse.head_failed


def test_a_stack_file_only_in_the_base_is_all_deletes(config):
    [gone] = diff.compare({"qa": {"resources": plan(config, "qa")}}, {"qa": {"missing": True}}, ["qa"])
    assert gone.count("delete") == 22 and gone.changes and not gone.error


def test_markdown_longer_than_a_comment_is_cut_with_a_note():
    many = diff.StackDiff("dev", changes=[
        diff.Change("update", f"urn:{i}", GROUP, f"svc-{i:04d}-group",
                    paths=[diff.PathChange(f"tags.k{j}", "a" * 30, "b" * 30) for j in range(5)])
        for i in range(400)])
    md = diff.render_markdown([many], "b")
    assert len(md) <= diff.MARKDOWN_LIMIT and md.rstrip().endswith("prints all of it.**")
    assert "| `dev` | 0 | 400 | 0 | 0 | 0 |" in md  # the summary table is never cut


def test_committed_stacks_are_the_projects_own(tmp_path: Path):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    for name in ("Pulumi.yaml", "Pulumi.dev.yaml", "Pulumi.prod.yaml", "other/Pulumi.qa.yaml", "Pulumi.dev.yaml.bak"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("config: {}\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "stacks"], check=True)
    (tmp_path / "Pulumi.staging.yaml").write_text("config: {}\n")
    subprocess.run([*git, "add", "Pulumi.staging.yaml"], check=True)
    assert diff.committed_stacks(tmp_path, "HEAD") == ["dev", "prod"]
    assert diff.committed_stacks(tmp_path) == ["dev", "prod", "staging"]  # the index, for the working tree


def test_a_new_edge_port_updates_device_deployments_and_replaces_the_immutable_hub_deployment(model_files):
    # Dynamic resources with their own type tokens (pulumi-python:dynamic/iot_edge:...) are asked
    # for their diff like the local target's: IoT Hub configurations cannot change, device content can.
    config = yaml.safe_load((ROOT / "Pulumi.edge.yaml").read_text())["config"]
    config["ml-deploy:models"][0]["path"] = str(model_files[0])
    after = copy.deepcopy(config)
    for service in after["ml-deploy:services"]:  # one on listed devices, one by a hub deployment
        service["port"] = 5002
    d = plan_diff(config, after, "edge")
    assert ops(d) == {"diabetes-plant7-deployment": "replace", "diabetes-edge-line-1-deployment": "update",
                      "diabetes-edge-line-2-deployment": "update"}
    assert "configuration_id (dynamic provider)" in change(d, "diabetes-plant7-deployment").replaced_by
    text = diff.render_text([d], "b")
    assert "content: [secret]" in text
    # The manifest's review copy shows what changed, with every secret value replaced.
    assert '\\"HostPort\\":\\"5002\\"' in text and "content_review: (text, changed lines)" in text
    for r in plan(after, "edge"):
        if "content_review" in r["inputs"]:
            review = r["inputs"]["content_review"]
            assert "[secret]" in review and "content_review" not in r["secret_paths"]
            manifest = json.loads(r["inputs"]["content"])
            creds = manifest["modulesContent"]["$edgeAgent"]["properties.desired"]["runtime"]["settings"]["registryCredentials"]
            assert all(c["password"] not in review for c in creds.values())
            modules = json.loads(review)["modulesContent"]["$edgeAgent"]["properties.desired"]["modules"]
            assert [m["env"] for m in modules.values()] == [{"SCORING_AUTH_KEYS": {"value": "[secret],[secret]"}}]


def test_a_resource_moved_under_an_alias_is_the_same_resource(config):
    # The state of before environments were the stack's: each endpoint's own child, under the URN the
    # head's alias names. The diff matches it as the engine does: no create, no delete.
    from tests.test_online_endpoint import ENVIRONMENT, endpoint_config

    head = plan(endpoint_config(config))
    base = copy.deepcopy(head)
    moved = 0
    for r in base:
        if r["type"] == ENVIRONMENT:
            r["urn"] = next(a for a in r["aliases"] if "OnlineEndpoint$" in a)
            r["aliases"] = []
            moved += 1
    assert moved == 2
    d = diff.compare_resources(base, head, "dev")
    assert d.changes == [] and d.unchanged == len(head)
    # Without the alias the same move is a new resource and a deleted one.
    for r in head:
        r["aliases"] = []
    assert sorted(c.op for c in diff.compare_resources(base, head, "dev").changes) == ["create"] * 2 + ["delete"] * 2
