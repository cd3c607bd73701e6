"""Azure ML scoring script for an ONNX model, run with onnxruntime.

`init()` opens the single `.onnx` file under AZUREML_MODEL_DIR; `run()` takes the raw request
body `{"data": [[...features...], ...]}` and returns one prediction per row.
"""

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

session = None
input_name = None


def init():
    global session, input_name
    root = Path(os.environ["AZUREML_MODEL_DIR"])
    found = sorted(root.rglob("*.onnx"))
    if len(found) != 1:
        raise RuntimeError(f"expected one .onnx file under {root}, found {len(found)}")
    options = ort.SessionOptions()
    # One scoring worker per core: onnxruntime's own thread pool would oversubscribe it.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(found[0]), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name


def run(raw_data):
    data = np.asarray(json.loads(raw_data)["data"], dtype=np.float32)
    if data.ndim != 2:
        raise ValueError("data must be a list of rows")
    (predictions,) = session.run(None, {input_name: data})
    return predictions.reshape(-1).tolist()
