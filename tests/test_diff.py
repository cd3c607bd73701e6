"""Diff discipline: one change in the config's inputs moves only what depends on it."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers import TEMPLATES, changed


def two_services(config):
    """Two images (one script each) over one model, a service on each."""
    second = dict(config["ml-deploy:images"][0], name="other")
    config["ml-deploy:images"].append(second)
    config["ml-deploy:services"].append(dict(config["ml-deploy:services"][0], name="other-aci", image="other"))
    return config


def test_unchanged_config_changes_nothing(config, run):
    assert changed(run(config), run(config)) == set()


def test_new_script_moves_only_its_image_and_services(config, run, tmp_path: Path):
    config = two_services(config)
    script = tmp_path / "score.py"
    shutil.copy(TEMPLATES / "sklearn" / "score.py", script)
    config["ml-deploy:images"][1]["execution_script"] = str(script)
    before = run(config)
    script.write_text(script.read_text() + "\n# a new line changes the image\n")
    after = run(config)
    assert changed(before, after) == {"other-image", "other-aci-group"}


def test_new_model_bytes_move_its_version_and_dependents(config, run, tmp_path: Path, model_files):
    config = two_services(config)
    model = tmp_path / "diabetes-ridge.pkl"
    shutil.copy(model_files[0], model)
    other = tmp_path / "other.onnx"
    shutil.copy(model_files[1], other)
    config["ml-deploy:models"].append({"name": "other-model", "path": str(other)})
    config["ml-deploy:models"][0]["path"] = str(model)
    before = run(config)
    model.write_bytes(model.read_bytes() + b"\n")
    after = run(config)
    moved = changed(before, after)
    assert moved == {
        "diabetes-ridge-diabetes-ridge.pkl",  # the blob under the new version's path
        "diabetes-ridge-version",
        "diabetes-image", "other-image",
        "diabetes-aci-group", "other-aci-group",
    }
    assert before.outputs["models"]["other-model"] == after.outputs["models"]["other-model"]
