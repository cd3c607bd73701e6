"""Review that tells the truth: the offline plan and plan diff show every change (untracked inputs
named, values in full, only secrets hidden), the same bytes for the same input, and refuse what
would deploy nothing or fail later; the command line answers failures in one line."""

from __future__ import annotations

import copy
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cli import diff, offline, plan
from tests.helpers import ROOT, assert_rejected, git_project, run_config

ML_DEPLOY = [sys.executable, "-m", "cli"]


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ML_DEPLOY, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(cwd), **(env or {})})


# ---- 1. what the program reads is each revision's own, or the diff says it is not ----------------

def test_a_retrained_untracked_model_is_named_as_not_compared(tmp_path: Path, model_files):
    repo = git_project(tmp_path / "repo", model_files[0])
    model = repo / "models" / model_files[0].name
    model.write_bytes(model.read_bytes() + b"\0")
    done = cli("diff", "--base", "HEAD", "--stack", "dev", cwd=repo)
    assert done.returncode == 0, done.stderr
    assert "models/diabetes-ridge.pkl is not in git at the base revision" in done.stdout
    assert "a change to it does not show here" in done.stdout
    as_json = json.loads(cli("diff", "--base", "HEAD", "--stack", "dev", "--json", cwd=repo).stdout)
    assert any("models/diabetes-ridge.pkl" in note for note in as_json[0]["uncompared"])


def test_a_tracked_script_is_read_from_each_revision(tmp_path: Path, model_files):
    repo = git_project(tmp_path / "repo", model_files[0])
    script = repo / "scoring_templates" / "sklearn" / "score.py"
    script.write_text(script.read_text() + "\n# retrained on new data\n")
    d = json.loads(cli("diff", "--base", "HEAD", "--stack", "dev", "--json", cwd=repo).stdout)[0]
    changes = {c["name"]: c for c in d["changes"]}
    assert changes["diabetes-image"]["op"] == "update"
    # The script is the base's own: not listed as uncompared; only the untracked model is.
    assert all("score.py" not in note for note in d["uncompared"])


# ---- 2. byte-stable ------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", ["dev", "prod", "edge"])
def test_the_plan_does_not_depend_on_registration_order(stack):
    rec = offline.run(offline.stack_config(stack), stack=stack)
    text, data = plan.render(rec, stack, []), json.dumps(plan.as_json(rec, []), sort_keys=True)
    for seed in range(3):
        shuffled = copy.copy(rec)
        shuffled.resources = list(rec.resources)
        random.Random(seed).shuffle(shuffled.resources)
        assert plan.render(shuffled, stack, []) == text
        assert json.dumps(plan.as_json(shuffled, []), sort_keys=True) == data


def test_plan_prints_the_same_bytes_run_after_run():
    runs = [cli("plan", "--stack", "prod", *flags) for flags in ((), (), ("--json",), ("--json",))]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    assert runs[0].stdout == runs[1].stdout and runs[2].stdout == runs[3].stdout


# ---- 3. values in full, only secrets hidden --------------------------------------------------------

def test_plan_shows_long_values_in_full_and_numbers_as_written():
    rec = offline.run(offline.stack_config("prod"), stack="prod")
    text = plan.render(rec, "prod", [])
    assert "..." not in text
    deployment = rec.by_name("kubernetes:apps/v1:Deployment", "diabetes-aks-deployment")
    probe = deployment.inputs["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    assert f"periodSeconds: {probe['periodSeconds']}" in text and isinstance(probe["periodSeconds"], int)
    dev = plan.render(offline.run(offline.stack_config("dev"), stack="dev"), "dev", [])
    assert "memoryInGB: 1\n" in dev and "1.0" not in dev


def test_only_the_secret_values_of_a_container_group_are_hidden(config):
    rec = run_config(config)
    group = rec.by_name("azure-native:containerinstance:ContainerGroup", "diabetes-aci-group")
    env = group.inputs["containers"][0]["environmentVariables"]
    secret_names = {e["name"] for i, e in enumerate(env)
                    if f"containers[0].environmentVariables[{i}].secureValue" in group.secret_paths}
    assert secret_names == {"SCORING_AUTH_KEYS", "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    assert not any(p.startswith("containers[0].image") or p == "containers" for p in group.secret_paths)
    hidden = plan.as_json(rec, [])
    [shown] = [r for r in hidden["resources"] if r["name"] == "diabetes-aci-group"]
    assert shown["inputs"]["containers"][0]["resources"]["requests"] == {"cpu": 1, "memoryInGB": 1}
    assert "[secret]" in json.dumps(shown["inputs"]) and json.dumps(env[13]["secureValue"]) not in json.dumps(hidden)


def test_a_changed_multi_line_text_shows_its_changed_lines():
    old = {"urn": "u", "type": "t", "name": "n", "inputs": {"script": "a\nb\nc\n"}}
    new = dict(old, inputs={"script": "a\nB\nc\n"})
    d = diff.compare_resources([old], [new], "dev")
    text = diff.render_text([d], "b")
    assert "-b" in text and "+B" in text


# ---- 4. Markdown and JSON for machines and pull requests -------------------------------------------

def test_markdown_rows_stay_one_line_whatever_the_error_holds():
    broken = {"error": "ConfigError: invalid stack config:\n  kubernetes_clusters[0].kubeconfig: no file | at /x"}
    diffs = diff.compare({"lab": broken}, {"lab": {"error": "other\nline"}}, ["lab"])
    md = diff.render_markdown(diffs, "b")
    rows = [line for line in md.splitlines() if line.startswith("| `lab`")]
    assert len(rows) == 1 and rows[0].count("|") == 8 and "no file &#124; at /x" in rows[0]


def test_json_carries_urns_secrecy_and_replace_reasons_apart(config):
    after = copy.deepcopy(config)
    after["ml-deploy:services"][0]["memory_gb"] = 2
    d = diff.compare_resources(diff.as_records(run_config(config)), diff.as_records(run_config(after)), "dev")
    [group] = diff.as_json([d])[0]["changes"]
    assert group["urn"].startswith("urn:pulumi:dev::ml-deploy::")
    assert group["replaced_because"] == [{"path": "containers[0].resources.requests.memoryInGB",
                                          "source": "program's replace_on_changes"}]
    assert group["paths"] == [{"path": "containers[0].resources.requests.memoryInGB", "old": 1, "new": 2,
                               "secret": False}]


# ---- 5. what would deploy nothing is an error ---------------------------------------------------------

def test_diff_of_a_stack_nobody_has_is_an_error():
    done = cli("diff", "--stack", "nosuch")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "no stack 'nosuch'" in done.stderr


def test_a_misspelt_namespace_is_an_error_naming_the_key(config):
    config["mldeploy:services"] = config.pop("ml-deploy:services")
    with pytest.raises(Exception, match=r"mldeploy:services: unknown config namespace 'mldeploy': did you mean "
                                        r"ml-deploy:services\?"):
        run_config(config)


def test_provider_namespaces_are_not_errors(config):
    config["kubernetes:enableServerSideApply"] = "true"
    config["pulumi:disable-default-providers"] = json.dumps(["random"])
    assert run_config(config).resources


# ---- 6. a script that cannot start fails the config check ------------------------------------------

def test_a_script_with_a_syntax_error_is_rejected_with_its_file_and_line(config, tmp_path: Path):
    script = tmp_path / "score.py"
    script.write_text("def init():\n    pass\n\ndef run(data)\n    return data\n")
    config["ml-deploy:images"][0]["execution_script"] = str(script)
    assert_rejected(config, "images[0].execution_script", f"{script}, line 4")


def test_a_script_without_run_is_rejected(config, tmp_path: Path):
    script = tmp_path / "score.py"
    script.write_text("import json\n\ndef init():\n    global model\n    model = None\n\ndef score(data):\n    return data\n")
    config["ml-deploy:images"][0]["execution_script"] = str(script)
    assert_rejected(config, "images[0].execution_script", "defines no run()")


def test_scripts_binding_init_and_run_by_import_or_assignment_pass(config, tmp_path: Path):
    script = tmp_path / "score.py"
    script.write_text("from json import loads as run\n\ntry:\n    from os import getcwd as init\nexcept ImportError:\n    init = None\n")
    config["ml-deploy:images"][0]["execution_script"] = str(script)
    assert run_config(config).resources


# ---- 14. one line per failure --------------------------------------------------------------------

def test_calling_a_service_that_is_down_is_one_line():
    done = cli("call", "--uri", "http://127.0.0.1:9/score", str(ROOT / "scoring_templates" / "sample-request.json"))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "no answer from http://127.0.0.1:9/score" in done.stderr


def test_a_malformed_stack_file_is_one_line_naming_file_and_line(tmp_path: Path, model_files):
    repo = git_project(tmp_path / "repo", model_files[0])
    (repo / "Pulumi.dev.yaml").write_text((repo / "Pulumi.dev.yaml").read_text() + "  bad: [unclosed\n")
    done = cli("plan", "--stack", "dev", cwd=repo)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert "Pulumi.dev.yaml: line" in done.stderr and "not valid YAML" in done.stderr
    assert "Traceback" in cli("plan", "--stack", "dev", "--debug", cwd=repo).stderr


# ---- 15. an offline plan needs no live machine-local files ----------------------------------------

def test_the_lab_stack_plans_without_a_lab(tmp_path: Path):
    done = cli("plan", "--stack", "lab", env={"ML_DEPLOY_LAB": str(tmp_path / "no-lab")})
    assert done.returncode == 0, done.stderr
    assert "kubernetes:apps/v1:Deployment  diabetes-k8s-deployment" in done.stdout


# ---- the pull-request workflow's plan-diff step, as written ---------------------------------------

def test_the_workflows_plan_diff_step_runs_as_written(tmp_path: Path, model_files):
    """The `plan-diff` job's run script, with the one expression GitHub fills in (the base commit),
    in a checkout with a change on top: it writes the comment and the job summary and passes."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "preview.yml").read_text())
    [script] = [s["run"] for s in workflow["jobs"]["plan-diff"]["steps"] if "ml-deploy diff" in s.get("run", "")]
    repo = git_project(tmp_path / "repo", model_files[0])
    base = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    stack_file = repo / "Pulumi.dev.yaml"
    stack = yaml.safe_load(stack_file.read_text())
    stack["config"]["ml-deploy:services"][0]["memory_gb"] = 2
    stack_file.write_text(yaml.safe_dump(stack))
    summary = tmp_path / "summary.md"
    script = script.replace("${{ github.event.pull_request.base.sha }}", base)
    assert "${{" not in script
    (repo / ".venv").symlink_to(ROOT / ".venv")  # what scripts/setup, the step before, leaves
    done = subprocess.run(["bash", "-e", "-c", script], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 0, done.stderr
    comment = (repo / "plan-diff.md").read_text()
    assert comment.startswith(diff.MARKER) and summary.read_text() == comment
    assert "| replace | `diabetes-aci-group` |" in comment
    assert "memoryInGB: 1 =&gt; 2" in comment


# ---- 11. the policy pack's rules on the offline plan ------------------------------------------------

def test_a_service_without_auth_fails_plan_and_diff_with_the_mandatory_rule(tmp_path: Path, model_files):
    repo = git_project(tmp_path / "repo", model_files[0])
    stack_file = repo / "Pulumi.dev.yaml"
    stack = yaml.safe_load(stack_file.read_text())
    stack["config"]["ml-deploy:services"][0]["auth_enabled"] = False
    stack_file.write_text(yaml.safe_dump(stack))
    planned = cli("plan", "--stack", "dev", cwd=repo)
    assert planned.returncode == 1
    assert "[mandatory] public-service-auth: azure-native:containerinstance:ContainerGroup  diabetes-aci-group" \
        in planned.stdout
    diffed = cli("diff", "--stack", "dev", "--markdown", cwd=repo)
    assert diffed.returncode == 1
    assert "| **mandatory** `public-service-auth` | `diabetes-aci-group` |" in diffed.stdout
