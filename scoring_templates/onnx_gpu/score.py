"""Azure ML scoring script for an ONNX model on a GPU, falling back to the CPU when there is none.

`init()` opens the single `.onnx` file under AZUREML_MODEL_DIR with ONNX Runtime's CUDA execution
provider first and its CPU provider second, and prints which one the session got: with
onnxruntime-gpu on a GPU node it is CUDAExecutionProvider; with the CPU package, no GPU, a driver
too old for its CUDA or a GPU CUDA no longer supports, ONNX Runtime falls back to
CPUExecutionProvider and the same requests get the same answers, more slowly. `run()` takes the raw
request body `{"data": [[...features...], ...]}` and returns one prediction per row.
"""

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

session = None
input_name = None
provider = None


def _providers():
    """CUDA then CPU, keeping only those this ONNX Runtime build has (the CPU package has no CUDA)."""
    available = ort.get_available_providers()
    if CUDA in available:
        # onnxruntime-gpu loads CUDA and cuDNN from the nvidia-* wheels of its `cuda`/`cudnn` extras.
        ort.preload_dlls()
    return [p for p in (CUDA, CPU) if p in available]


def init():
    global session, input_name, provider
    root = Path(os.environ["AZUREML_MODEL_DIR"])
    found = sorted(root.rglob("*.onnx"))
    if len(found) != 1:
        raise RuntimeError(f"expected one .onnx file under {root}, found {len(found)}")
    requested = _providers()
    options = ort.SessionOptions()
    if CUDA not in requested:
        # One scoring worker per core: onnxruntime's own CPU thread pool would oversubscribe it.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(found[0]), options, providers=requested)
    # What the session really uses: a CUDA provider that fails to start leaves only the CPU one.
    provider = session.get_providers()[0]
    fallback = "" if provider == CUDA else f" (CUDA not available; requested {requested})"
    print(f"onnx_gpu: scoring {found[0].name} with {provider}{fallback}", flush=True)
    input_name = session.get_inputs()[0].name


def run(raw_data):
    data = np.asarray(json.loads(raw_data)["data"], dtype=np.float32)
    if data.ndim != 2:
        raise ValueError("data must be a list of rows")
    (predictions,) = session.run(None, {input_name: data})
    return predictions.reshape(-1).tolist()
