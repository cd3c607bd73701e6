"""Azure ML scoring script for a scikit-learn model saved with pickle or joblib.

`init()` loads the single `.pkl`/`.joblib` file under AZUREML_MODEL_DIR; `run()` takes
`{"data": [[...10 features...], ...]}` and returns one prediction per row. The schema
decorators type the input and give the service its swagger.
"""

import os
from pathlib import Path

import joblib
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema, output_schema

model = None


def _model_file() -> Path:
    root = Path(os.environ["AZUREML_MODEL_DIR"])
    found = sorted(p for ext in ("*.pkl", "*.joblib") for p in root.rglob(ext))
    if len(found) != 1:
        raise RuntimeError(f"expected one .pkl or .joblib file under {root}, found {len(found)}")
    return found[0]


def init():
    global model
    model = joblib.load(_model_file())


@input_schema("data", NumpyParameterType(np.array([[0.04, 0.05, 0.06, 0.02, -0.04, -0.03, -0.04, -0.0, 0.02, -0.02]])))
@output_schema(NumpyParameterType(np.array([152.1])))
def run(data):
    return model.predict(data).tolist()
