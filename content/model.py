"""A model's content: its files, and the version derived from their names and bytes."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

VERSION_LEN = 12


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: where it is on disk and where it goes under the model's version folder."""

    source: Path
    relative: PurePosixPath
    """Path below `<model>/<version>/`, starting with the registered file's or folder's own name."""


def model_files(path: Path) -> list[ModelFile]:
    """The files of a model at `path` (a file or a folder), in a stable order."""
    if path.is_file():
        return [ModelFile(path, PurePosixPath(path.name))]
    files = sorted(p for p in path.rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"model folder {path} holds no files")
    return [ModelFile(p, PurePosixPath(path.name, *p.relative_to(path).parts)) for p in files]


@functools.lru_cache(maxsize=None)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> bytes:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def file_sha256(path: Path) -> bytes:
    """SHA-256 of a file, streamed (models can be large) and computed once per program run
    however many versions and bundles include the file."""
    stat = path.stat()
    return _file_sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


def content_version(files: list[ModelFile]) -> str:
    """The model version: a digest of its files' names and bytes, so the same bytes give the same version."""
    digest = hashlib.sha256()
    for f in files:
        digest.update(str(f.relative).encode() + b"\0")
        digest.update(file_sha256(f.source))
    return digest.hexdigest()[:VERSION_LEN]


@dataclass(frozen=True)
class BundledModel:
    """A model's content: its name, its content version and its files."""

    name: str
    version: str
    files: list[ModelFile]

    @classmethod
    def from_path(cls, name: str, path: Path) -> "BundledModel":
        files = model_files(path)
        return cls(name, content_version(files), files)


