"""An image's environment on the local target: pip requirement lines from a pip file or from a conda
file (its pip section and the PyPI names of its conda packages), one content-addressed venv per
environment, and errors that name the environment file and the package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from content.environment import UnresolvableEnvironment, environment_key, from_conda, from_pip
from providers.local import build_venv, pip_failure
from tests.helpers import TEMPLATES, assert_rejected, changed

DYNAMIC = "pulumi-python:dynamic:Resource"


def local_config(config, image: dict | None = None):
    config["ml-deploy:workspace"] = {"name": "local", "kind": "local", "path": ".ml-deploy/test-local", "protect": False}
    config["ml-deploy:services"] = [{"name": "diabetes-local", "image": "diabetes", "target": "local"}]
    if image is not None:
        config["ml-deploy:images"][0] = {**{k: v for k, v in config["ml-deploy:images"][0].items()
                                            if k not in ("conda_file", "pip_requirements")}, **image}
    return config


def conda_file(tmp_path: Path, *deps: str, pip: tuple[str, ...] = ()) -> Path:
    path = tmp_path / "env.yml"
    lines = ["name: test", "dependencies:"] + [f"  - {d}" for d in deps]
    if pip:
        lines += ["  - pip:"] + [f"      - {p}" for p in pip]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- conda and pip files as pip requirement lines ------------------------------------------------

def test_conda_packages_become_their_pypi_names_with_pip_version_specs(tmp_path):
    env = from_conda(conda_file(tmp_path, "python=3.11", "pip", "numpy=1.26", "conda-forge::pandas 2.2.*",
                                "scikit-learn>=1.3,<2", "py-xgboost=2.0=py311_0", "joblib 1.4.2",
                                pip=("onnxruntime>=1.31,<1.32",)))
    assert env.python == "3.11"
    assert env.requirements == ("numpy==1.26.*", "pandas==2.2.*", "scikit-learn>=1.3,<2", "xgboost==2.0.*",
                                "joblib==1.4.2", "onnxruntime>=1.31,<1.32")


def test_a_conda_package_without_a_pypi_name_is_an_error_naming_the_file_and_package(tmp_path):
    path = conda_file(tmp_path, "python=3.11", "cudatoolkit=11.8")
    with pytest.raises(UnresolvableEnvironment, match=rf"{path}: conda package 'cudatoolkit=11.8' has no PyPI"):
        from_conda(path)


def test_conda_alternatives_have_no_pip_form(tmp_path):
    with pytest.raises(UnresolvableEnvironment, match="alternatives"):
        from_conda(conda_file(tmp_path, "numpy 1.25|1.26"))


def test_pip_files_keep_their_lines_without_comments(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# pins\nnumpy>=2  # arrays\n\nscikit-learn==1.9.1\n")
    assert from_pip(path).requirements == ("numpy>=2", "scikit-learn==1.9.1")


@pytest.mark.parametrize("template", ["sklearn", "onnx", "onnx_gpu"])
def test_the_templates_conda_and_pip_files_ask_for_the_same_packages(template):
    conda = from_conda(TEMPLATES / template / "env.yml")
    pip = from_pip(TEMPLATES / template / "requirements.txt")
    assert conda.requirements == pip.requirements


def test_a_venv_is_addressed_by_its_lines_and_the_exact_python():
    lines = ["numpy>=2", "joblib"]
    assert environment_key(lines, "3.11.7") == environment_key(list(lines), "3.11.7")
    assert environment_key(lines, "3.11.7") != environment_key(lines, "3.11.8")
    assert environment_key(lines, "3.11.7") != environment_key(lines[::-1], "3.11.7")


# ---- the local target -------------------------------------------------------------------------------

def test_local_service_runs_with_its_images_venv(config, run):
    rec = run(local_config(config))
    venv = rec.by_name(DYNAMIC, "diabetes-venv")
    process = rec.by_name(DYNAMIC, "diabetes-local-process")
    assert process.inputs["python"] == f"{venv.inputs['cache']}/{venv.inputs['key']}/bin/python"
    assert Path(venv.inputs["cache"]).name == "envs" and not Path(venv.inputs["cache"]).is_relative_to(Path.cwd())
    # The image's requirements, then the runtime's, as in the image.
    assert venv.inputs["requirements"][:3] == ["scikit-learn>=1.9,<1.10", "joblib>=1.4,<2", "numpy>=2.0,<3"]
    assert any(line.startswith("uvicorn") for line in venv.inputs["requirements"])


def test_conda_and_pip_forms_of_one_environment_share_a_venv(config, run):
    conda = run(local_config(config)).by_name(DYNAMIC, "diabetes-venv").inputs["key"]
    pip = run(local_config(config, {"pip_requirements": str(TEMPLATES / "sklearn" / "requirements.txt")}))
    assert pip.by_name(DYNAMIC, "diabetes-venv").inputs["key"] == conda


def test_a_changed_requirement_gives_a_new_venv_and_restarts_the_service(config, run, tmp_path):
    requirements = tmp_path / "requirements.txt"
    requirements.write_text((TEMPLATES / "sklearn" / "requirements.txt").read_text())
    local_config(config, {"pip_requirements": str(requirements)})
    before = run(config)
    requirements.write_text(requirements.read_text() + "pyyaml>=6\n")
    assert changed(before, run(config)) == {"diabetes-venv", "diabetes-bundle", "diabetes-local-process"}


def test_no_venv_for_images_no_local_service_runs(config, run):
    local_config(config)
    config["ml-deploy:images"].append(dict(config["ml-deploy:images"][0], name="unused"))
    venvs = [r.name for r in run(config).of_type(DYNAMIC) if r.name.endswith("-venv")]
    assert venvs == ["diabetes-venv"]


def test_an_unknown_conda_package_fails_before_anything_is_registered(config, tmp_path):
    path = conda_file(tmp_path, "python=3.11", "cudatoolkit=11.8", pip=("numpy",))
    local_config(config, {"conda_file": str(path)})
    assert_rejected(config, "images[0].conda_file", f"{path}: conda package 'cudatoolkit=11.8' has no PyPI equivalent")


def test_a_python_this_machine_lacks_is_an_error(config, tmp_path):
    local_config(config, {"conda_file": str(conda_file(tmp_path, "python=2.6", "numpy"))})
    assert_rejected(config, "images[0].conda_file", "no python2.6 on this machine")


def test_a_conda_package_without_pypi_name_is_fine_for_a_cloud_image(config, run, tmp_path):
    """Only venvs need PyPI names: an image on Azure installs its conda file with conda."""
    config["ml-deploy:images"][0]["conda_file"] = str(conda_file(tmp_path, "python=3.11", "cudatoolkit=11.8"))
    assert run(config).of_type("docker-build:index:Image")


def test_pip_failure_names_the_file_and_the_package():
    output = "ERROR: Could not find a version that satisfies the requirement nope==9 (from versions: none)\n" \
             "ERROR: No matching distribution found for nope==9\n"
    assert pip_failure("/p/requirements.txt", output) == (
        "environment /p/requirements.txt: nope==9 cannot be had from PyPI (no matching distribution); "
        "fix its name or version in that file")


def test_a_venv_whose_package_is_not_on_pypi_fails_and_leaves_nothing(tmp_path):
    cache = tmp_path / "envs"
    with pytest.raises(RuntimeError, match=r"environment /x/requirements.txt: ml-deploy-no-such-package==0.0.1 cannot be had from PyPI"):
        build_venv(cache, "k1", sys.executable, ["ml-deploy-no-such-package==0.0.1"], "/x/requirements.txt")
    assert not (cache / "k1").exists()


def test_a_venv_is_built_once_and_then_reused(tmp_path):
    cache = tmp_path / "envs"
    first = build_venv(cache, "k2", sys.executable, [], "/x/requirements.txt")
    (first / "marker").write_text("kept")
    assert build_venv(cache, "k2", sys.executable, ["never-installed"], "/x/requirements.txt") == first
    assert (first / "marker").read_text() == "kept" and (first / "bin" / "python").exists()
