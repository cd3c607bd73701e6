"""An image's Python environment as pip requirement lines: from a pip requirements file, or from a
conda file's pip section plus the PyPI equivalents of its conda packages.

Images with `pip_requirements` install these lines into a venv; the local target builds a venv
from them for each environment (content-addressed by `environment_key`), so a local service runs
with the packages its image has rather than with the project's own.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

CONDA_TO_PYPI: dict[str, Optional[str]] = {
    # conda package -> PyPI distribution; None: nothing to install (the venv has it already).
    "python": None,  # the interpreter itself: chosen by version, see `Environment.python`
    "pip": None,
    "setuptools": "setuptools",
    "wheel": "wheel",
    "numpy": "numpy",
    "scipy": "scipy",
    "pandas": "pandas",
    "scikit-learn": "scikit-learn",
    "joblib": "joblib",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "skl2onnx": "skl2onnx",
    "py-xgboost": "xgboost",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "pytorch": "torch",
    "torchvision": "torchvision",
    "tensorflow": "tensorflow",
    "pillow": "pillow",
    "pyyaml": "pyyaml",
    "requests": "requests",
}
"""The conda packages whose PyPI distribution is known here (same project, same version numbers).
Anything else in a conda file's `dependencies` is an error for a venv: move it to the file's pip
section under its PyPI name, or use `pip_requirements`."""

# A conda match spec: [channel::]name[ version[ build]] or name[=|==|>=|...]version[=build].
_CONDA_SPEC = re.compile(r"^(?:[^:\s]+::)?(?P<name>[A-Za-z0-9_.\-]+)\s*(?P<rest>.*)$")
# Options in a requirements file that point at other files, which are not in the image's context.
_FILE_OPTIONS = ("-r", "--requirement", "-c", "--constraint", "-e", "--editable")


class UnresolvableEnvironment(ValueError):
    """An environment file that cannot become pip requirements; the message names the file and the line."""


@dataclass(frozen=True)
class Environment:
    """An image's environment resolved to pip requirement lines."""

    source: Path
    """The conda or pip file it came from."""
    requirements: tuple[str, ...]
    """pip requirement lines, in file order, comments and blank lines dropped."""
    python: Optional[str] = None
    """The Python `major.minor` the conda file asks for (`python=3.11`); None: any (pip files)."""


def requirement_lines(text: str) -> list[str]:
    """The requirement lines of a requirements file's text (comments and blank lines dropped)."""
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            lines.append(line)
    return lines


def from_pip(path: Path) -> Environment:
    """A pip requirements file, as Azure ML's `Environment.from_pip_requirements` takes it."""
    lines = requirement_lines(path.read_text())
    for line in lines:
        option = line.split()[0].split("=", 1)[0]
        if option in _FILE_OPTIONS:
            raise UnresolvableEnvironment(f"{path}: {line!r}: only this file goes into the image; list the requirements here")
    return Environment(path, tuple(lines))


def _pip_version(name: str, rest: str, path: Path, spec: str) -> str:
    """A conda version constraint in pip's syntax: `=1.26` (conda's prefix match) is `==1.26.*`."""
    rest = rest.strip()
    if not rest:
        return ""
    if "|" in rest:
        raise UnresolvableEnvironment(f"{path}: conda package {spec!r}: alternatives ('|') have no pip equivalent")
    if rest.startswith("=") and not rest.startswith("=="):
        version = rest[1:].split("=", 1)[0]  # drop a build string: `=1.26=py311h...`
        return f"=={version}" if "*" in version else f"=={version}.*"
    if rest[0].isdigit():  # `numpy 1.26.*` or `numpy 1.26.4 py311_0`: a version, maybe a build
        version = rest.split()[0]
        return f"=={version}"
    return rest.split()[0].replace(" ", "")  # `>=1.2,<2`: the same in pip


def _python_version(rest: str) -> Optional[str]:
    match = re.match(r"^\s*=?=?\s*(\d+)\.(\d+)", rest)
    return f"{match.group(1)}.{match.group(2)}" if match else None


def from_conda(path: Path) -> Environment:
    """A conda file's pip section plus its conda packages under their PyPI names (CONDA_TO_PYPI)."""
    data: Any = yaml.safe_load(path.read_text()) or {}
    deps = data.get("dependencies") if isinstance(data, dict) else None
    if not isinstance(deps, list):
        raise UnresolvableEnvironment(f"{path}: no `dependencies` list")
    lines: list[str] = []
    pip_lines: list[str] = []
    python: Optional[str] = None
    for dep in deps:
        if isinstance(dep, dict) and set(dep) == {"pip"} and isinstance(dep["pip"], list):
            pip_lines += [str(line).strip() for line in dep["pip"]]
            continue
        spec = str(dep).strip()
        match = _CONDA_SPEC.match(spec)
        if match is None:
            raise UnresolvableEnvironment(f"{path}: {spec!r} is not a conda package spec")
        name, rest = match.group("name").lower(), match.group("rest")
        if name not in CONDA_TO_PYPI:
            raise UnresolvableEnvironment(
                f"{path}: conda package {spec!r} has no PyPI equivalent known to ml-deploy "
                f"(content/environment.py CONDA_TO_PYPI); list its PyPI name in the file's pip section, "
                f"or use pip_requirements")
        if name == "python":
            python = _python_version(rest)
            continue
        pypi = CONDA_TO_PYPI[name]
        if pypi is not None:
            lines.append(pypi + _pip_version(name, rest, path, spec))
    for line in pip_lines:
        if line.split()[0] in _FILE_OPTIONS:
            raise UnresolvableEnvironment(f"{path}: pip line {line!r}: list the requirements in the conda file itself")
    return Environment(path, tuple(lines + pip_lines), python)


def load(conda_file: Optional[Path], pip_requirements: Optional[Path]) -> Environment:
    """The environment of an image, from whichever of its two files is set."""
    if pip_requirements is not None:
        return from_pip(pip_requirements)
    assert conda_file is not None, "config validation requires one of the two"
    return from_conda(conda_file)


def environment_key(lines: list[str] | tuple[str, ...], python_version: str) -> str:
    """The content address of a venv: its requirement lines (in order) and the exact Python version."""
    digest = hashlib.sha256(f"python {python_version}\n".encode())
    for line in lines:
        digest.update(line.encode() + b"\n")
    return digest.hexdigest()[:16]
