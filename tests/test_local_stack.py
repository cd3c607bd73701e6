"""The local stack through the real Pulumi engine (Automation API): up, no-op preview, update, destroy.

The project is copied to a temporary folder so that changing its config or script never touches
the repository; the engine comes from scripts/pulumi-engine (built once, cached by version).
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from pulumi import automation as auto

from providers.local import process_alive
from cli import logs
from cli.call import call
from tests.helpers import SEED, copy_project, local_engine_stack

@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, model_files) -> Path:
    return copy_project(tmp_path_factory.mktemp("project"), model_files[0])


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file backend's folder."""
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="module")
def stack(project: Path, state: Path) -> Iterator[auto.Stack]:
    with local_engine_stack(project, state) as stack:
        yield stack


def service(stack: auto.Stack) -> tuple[str, str]:
    out = stack.outputs()["services"].value["diabetes-local"]
    return out["scoring_uri"], out["primary_key"]


def score(stack: auto.Stack) -> list[float]:
    uri, key = service(stack)
    status, body = call(uri, json.dumps(SEED).encode(), key)
    assert status == 200, body
    return json.loads(body)


def port_open(uri: str) -> bool:
    port = int(uri.split(":")[2].split("/")[0])
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_serves_the_seed_example(stack):
    result = stack.up(on_output=lambda _: None)
    assert result.summary.result == "succeeded"
    assert len(score(stack)) == 2


def test_key_is_a_secret_in_state_and_outputs(stack, state: Path):
    _, key = service(stack)
    stored = (state / ".pulumi" / "stacks" / "ml-deploy" / "local.json").read_text()
    assert key and key not in stored
    shown = subprocess.run(["pulumi", "stack", "output", "services", "--json", "--stack", "local"],
                           cwd=stack.workspace.work_dir, capture_output=True, text=True, check=True).stdout
    assert key not in shown and json.loads(shown)["diabetes-local"]["primary_key"] == "[secret]"


def test_preview_right_after_up_changes_nothing(stack):
    preview = stack.preview(on_output=lambda _: None)
    assert set(preview.change_summary) == {"same"}, preview.change_summary


def test_changed_script_updates_only_the_image_and_the_service(stack, project: Path):
    before = score(stack)
    script = project / "scoring_templates" / "sklearn" / "score.py"
    script.write_text(script.read_text().replace(
        "return model.predict(data).tolist()", "return [round(p, 1) for p in model.predict(data).tolist()]"))
    preview = stack.preview(diff=True, on_output=lambda _: None)
    changes = {op: n for op, n in preview.change_summary.items() if op != "same"}
    # The bundle is content-addressed (replaced); the service restarts on it (updated).
    assert changes == {"replace": 1, "update": 1}, preview.change_summary
    stack.up(on_output=lambda _: None)
    after = score(stack)
    assert after == [round(p, 1) for p in before] and after != before


def test_logs_read_the_running_service_from_its_outputs(stack):
    source = stack.outputs()["services"].value["diabetes-local"]["logs"]
    assert source["kind"] == "file"
    assert "score.py" in logs.read(source, tail=50)


def test_logs_show_a_failed_init_with_the_script_and_the_error(stack, project: Path):
    script = project / "scoring_templates" / "sklearn" / "score.py"
    working = script.read_text()
    script.write_text(working.replace("def init():", "def init():\n    raise RuntimeError('model file is corrupt')\n\n\ndef _unused():", 1))
    try:
        with pytest.raises(auto.CommandError):
            stack.up(on_output=lambda _: None)
        # No outputs for a service that never became ready: the log is found from the stack config.
        text = logs.read(logs.source_from_config("local", "diabetes-local", root=project), tail=200)
        assert "score.py" in text and "model file is corrupt" in text, text
    finally:
        script.write_text(working)
    assert stack.up(on_output=lambda _: None).summary.result == "succeeded"


def test_destroy_leaves_no_process_and_no_port(stack):
    uri, _ = service(stack)
    pid = next(r["outputs"]["pid"] for r in stack.export_stack().deployment["resources"]
               if r["urn"].endswith("diabetes-local-process"))
    stack.destroy(on_output=lambda _: None)
    assert not process_alive(int(pid))
    assert not port_open(uri)
