"""Shared fixtures: trained models, stack configs, and the program run under the mocks."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest

from cli.offline import Recording
from scoring_templates.train_diabetes import train
from tests.helpers import dev_config, run_config


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The diabetes ridge model as (pickle, onnx), trained once per test session."""
    return train(tmp_path_factory.mktemp("models"))


@pytest.fixture
def config(model_files: tuple[Path, Path]) -> dict[str, Any]:
    """A fresh, mutable copy of the dev config (object values as Python objects)."""
    return copy.deepcopy(dev_config(model_files[0]))


@pytest.fixture
def run() -> Callable[..., Recording]:
    return run_config


