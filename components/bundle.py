"""The scoring bundle: every file a scoring image (or a local service) runs, tagged by its content."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from components.model import ModelFile

APP_DIR = "app"
"""Bundle folder with the execution script, conda env and models (`/var/azureml-app` in images)."""
RUNTIME_DIR = "serving"
"""Bundle folder with the scoring runtime package."""
SCRIPT_NAME = "score.py"
CONDA_NAME = "env.yml"
MODELS_DIR = "azureml-models"
TAG_LEN = 16


@dataclass(frozen=True)
class BundledModel:
    """A registered model as a bundle needs it."""

    name: str
    version: str
    files: list[ModelFile]


def model_dir(models: list[BundledModel]) -> PurePosixPath:
    """`AZUREML_MODEL_DIR` relative to the app folder, as Azure ML sets it.

    One model: `azureml-models/<model>/<version>`; several: `azureml-models`, holding
    `<model>/<version>/...`, so scripts written for Azure ML find their files unchanged.
    """
    if len(models) == 1:
        return PurePosixPath(MODELS_DIR, models[0].name, models[0].version)
    return PurePosixPath(MODELS_DIR)


def runtime_files(runtime_root: Path) -> dict[PurePosixPath, Path]:
    """The scoring runtime's source files (the `serving` package and its requirements)."""
    files = sorted(p for p in runtime_root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return {PurePosixPath(RUNTIME_DIR, *p.relative_to(runtime_root).parts): p for p in files}


def bundle_sources(
    execution_script: Path, conda_file: Path, models: list[BundledModel], runtime_root: Path
) -> dict[PurePosixPath, Path]:
    """Where each source file goes in the bundle."""
    sources: dict[PurePosixPath, Path] = {
        PurePosixPath(APP_DIR, SCRIPT_NAME): execution_script,
        PurePosixPath(APP_DIR, CONDA_NAME): conda_file,
    }
    for m in models:
        for f in m.files:
            sources[PurePosixPath(APP_DIR, MODELS_DIR, m.name, m.version) / f.relative] = f.source
    sources.update(runtime_files(runtime_root))
    return sources


def content_tag(files: dict[PurePosixPath, bytes]) -> str:
    """A tag derived from the bundle's paths and bytes: unchanged inputs give an unchanged tag."""
    digest = hashlib.sha256()
    for rel in sorted(files):
        digest.update(str(rel).encode() + b"\0")
        digest.update(hashlib.sha256(files[rel]).digest())
    return digest.hexdigest()[:TAG_LEN]


def write_bundle(target: Path, files: dict[PurePosixPath, bytes]) -> Path:
    """Write `files` under `target` unless a complete bundle is already there; return `target`.

    Bundles are content-addressed (the folder name carries the tag), so an existing folder with a
    completion marker already holds exactly these bytes and writing it again would be wasted I/O.
    """
    marker = target / ".complete"
    if marker.exists():
        return target
    partial = target.with_name(target.name + f".partial-{os.getpid()}")
    for rel, data in files.items():
        dest = partial / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
    (partial / ".complete").write_text("")
    if target.exists():  # an interrupted earlier write: replace it
        import shutil

        shutil.rmtree(target)
    partial.rename(target)
    return target
