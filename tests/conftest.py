"""Shared fixtures: trained models, stack configs, and the program run under the mocks."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest

from infra import offline
from infra.offline import Recording
from scoring_templates.train_diabetes import train

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "scoring_templates"
SEED = {"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]]}


@pytest.fixture(scope="session")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The diabetes ridge model as (pickle, onnx), trained once per test session."""
    return train(tmp_path_factory.mktemp("models"))


def dev_config(pkl: Path) -> dict[str, Any]:
    """The README's dev stack config, with the model at `pkl`."""
    return {
        "azure-native:location": "westeurope",
        "ml-deploy:workspace": {"name": "mlws", "protect": False},
        "ml-deploy:models": [
            {"name": "diabetes-ridge", "path": str(pkl), "description": "Ridge regression on the diabetes data",
             "tags": {"data": "diabetes", "type": "regression"}},
        ],
        "ml-deploy:images": [
            {"name": "diabetes", "models": ["diabetes-ridge"],
             "execution_script": str(TEMPLATES / "sklearn" / "score.py"),
             "conda_file": str(TEMPLATES / "sklearn" / "env.yml"),
             "description": "Image with ridge regression model", "tags": {"data": "diabetes"}},
        ],
        "ml-deploy:services": [
            {"name": "diabetes-aci", "image": "diabetes", "target": "aci", "cpu_cores": 1, "memory_gb": 1,
             "auth_enabled": True, "enable_app_insights": True},
        ],
    }


@pytest.fixture
def config(model_files: tuple[Path, Path]) -> dict[str, Any]:
    """A fresh, mutable copy of the dev config (object values as Python objects)."""
    return copy.deepcopy(dev_config(model_files[0]))


def run_config(config: dict[str, Any], stack: str = "dev") -> Recording:
    """Run the program under the mocks exactly as the engine would hand it this config."""
    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in config.items()}
    return offline.run(values, stack=stack)


@pytest.fixture
def run() -> Callable[..., Recording]:
    return run_config


def has_resource(recording: Recording, type_: str, subset: dict[str, Any]) -> bool:
    """Whether some resource of `type_` has inputs that include `subset` (nested dicts compared by subset)."""
    return any(_includes(r.inputs, subset) for r in recording.of_type(type_))


def _includes(actual: Any, expected: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and _includes(actual[k], v) for k, v in expected.items())
    return actual == expected
