"""`Model.get_model_path` without azureml-core: find a deployed model's file or folder by name.

Scripts of the v1 SDK era call `Model.get_model_path("name")` in `init()`. azureml-core resolves
that against `azureml-models/<name>/<version>/` under the app root: the latest (highest) version
when none is given, and the single file or folder that version holds. This module applies the same
rules to the models this runtime serves, found from `AZUREML_MODEL_DIR`:

- several models: `AZUREML_MODEL_DIR` is `azureml-models`, holding `<name>/<version>/...`;
- one model: `AZUREML_MODEL_DIR` is `azureml-models/<name>/<version>` itself;
- as azureml-core does: `$AML_APP_ROOT/azureml-models` (or `./azureml-models`), then `./<name>`.

Versions here may be any folder name (this project versions models by content digest), so a
version is an int or a str, and "latest" is the highest number when every version is a number,
else the only version there is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

MODELS_DIR = "azureml-models"


class AzureMLException(Exception):
    """Base of the exceptions below (as in azureml-core)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class WebserviceException(AzureMLException):
    """The model folder does not have the layout Azure ML deploys (azureml-core's exception)."""


class ModelNotFoundException(AzureMLException):
    """No deployed model has that name (and version)."""


def _roots(model_name: str) -> list[Path]:
    """Folders that may hold `<model_name>/<version>/`, in the order they are searched."""
    roots: list[Path] = []
    model_dir = os.environ.get("AZUREML_MODEL_DIR")
    if model_dir:
        here = Path(model_dir).absolute()
        if here.parent.name == model_name:
            roots.append(here.parent.parent)  # one model: AZUREML_MODEL_DIR is azureml-models/<name>/<version>
        roots.append(here)  # several models: AZUREML_MODEL_DIR is azureml-models
    roots.append(Path(os.environ.get("AML_APP_ROOT", "")).absolute() / MODELS_DIR)
    unique: list[Path] = []
    for root in roots:
        if root not in unique:
            unique.append(root)
    return unique


def _latest(versions: list[str], folder: Path) -> str:
    if all(v.isdigit() for v in versions):
        return max(versions, key=int)
    if len(versions) == 1:
        return versions[0]
    raise WebserviceException(f"{folder} holds versions {sorted(versions)} that are not all numbers: "
                              "pass the version to get_model_path")


def get_model_path(model_name: str, version: Optional[Union[int, str]] = None) -> str:
    """The path of the file or folder deployed as model `model_name` (at `version`, or the latest)."""
    if model_name is None:
        raise WebserviceException("model_name is None")
    for root in _roots(model_name):
        folder = root / model_name
        if not folder.is_dir():
            continue
        versions = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if not versions:
            continue
        chosen = str(version) if version is not None else _latest(versions, folder)
        candidate = folder / chosen
        if not candidate.is_dir():
            continue
        entries = sorted(os.listdir(candidate))
        if len(entries) != 1:
            raise WebserviceException(f"Dir {candidate} can contain only 1 file or folder. Found {entries}")
        return str(candidate / entries[0])
    if os.path.exists(model_name):
        return model_name
    wanted = model_name if version is None else f"{model_name} version {version}"
    searched = ", ".join(str(r) for r in _roots(model_name))
    raise ModelNotFoundException(f"Model {wanted} not found under {searched} or in the current working "
                                 f"directory {os.getcwd()}")


class Model:
    """The part of azureml-core's `Model` that scoring scripts use inside a deployment."""

    @staticmethod
    def get_model_path(model_name: str, version: Optional[Union[int, str]] = None,
                       _workspace: object = None) -> str:
        """The path of the deployed model `model_name` (a file or a folder), the latest version unless given."""
        if _workspace is not None:
            raise WebserviceException("this runtime finds deployed models only; downloading from a workspace "
                                      "needs azureml-core")
        return get_model_path(model_name, version)
