"""Scoring scripts in the styles Microsoft's samples use, shared by the parity tests and the reference comparison.

Every script is deterministic (no ids, pids or times in its answers), so two servers running it
can be compared byte for byte. They import `AMLResponse`/`rawhttp` from
`azureml_inference_server_http.api`, which both this runtime (its stand-ins) and Azure ML's
server provide.
"""

from __future__ import annotations

PLAIN = """
import json, os

def init():
    print("plain init")

def run(data):
    if data == "none":
        return None
    if data == "dumps":
        return json.dumps({"a": 1})
    if data == "dict":
        return {"a": [1, 2.5, "x"], "b": None, "c": {"d": True}}
    if data == "list":
        return [1, 2]
    if data == "float":
        return 0.1 + 0.2
    if data == "nan":
        return float("nan")
    if data == "unicode":
        return "h\\u00e9llo \\u2713"
    if data == "error":
        return "Error: the input is wrong"
    if data == "raise":
        raise ValueError("boom")
    if data == "bytes":
        return b"raw bytes"
    if data == "numpy":
        import numpy as np
        return np.array([1, 2])
    if data == "env":
        return {"entry": os.path.basename(os.environ["AZUREML_ENTRY_SCRIPT"]),
                "app_root_is_cwd": os.environ["AML_APP_ROOT"] == os.getcwd()}
    return "Hello " + data
"""

HEADERS = """
def init():
    pass

def run(data, request_headers):
    return {"data": data, "custom": request_headers.get("X-Custom"),
            "content_type": request_headers.get("Content-Type"),
            "x_names": sorted(k for k in request_headers if k.startswith("X-"))}
"""

NUMPY_SCHEMA = """
import numpy as np
from inference_schema.parameter_types.numpy_parameter_type import NumpyParameterType
from inference_schema.schema_decorators import input_schema, output_schema

def init():
    pass

@input_schema("data", NumpyParameterType(np.array([[1.0, 2.0]])))
@output_schema(NumpyParameterType(np.array([3.0])))
def run(data):
    return data.sum(axis=1).tolist()
"""

PANDAS_SCHEMA = """
import pandas as pd
from inference_schema.parameter_types.pandas_parameter_type import PandasParameterType
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

def init():
    pass

@input_schema("data", PandasParameterType(pd.DataFrame({"a": [1], "b": [1.5], "c": ["x"]})))
@input_schema("scale", StandardPythonParameterType(2))
@output_schema(StandardPythonParameterType({"rows": 1, "total": 3.0}))
def run(data, scale):
    return {"rows": len(data), "total": float((data["a"] * scale + data["b"]).sum())}
"""

STANDARD_SCHEMA = """
from inference_schema.parameter_types.standard_py_parameter_type import StandardPythonParameterType
from inference_schema.schema_decorators import input_schema, output_schema

def init():
    pass

@input_schema("text", StandardPythonParameterType("a sentence"))
@output_schema(StandardPythonParameterType("A SENTENCE"))
def run(text):
    return text.upper()
"""

RAW = """
import json
from azureml_inference_server_http.api.aml_request import rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse

def init():
    pass

@rawhttp
def run(request):
    case = request.args.get("case", "echo")
    if request.method == "GET":
        return AMLResponse(request.full_path, 200)
    if request.method != "POST":
        return AMLResponse("method " + request.method, 400)
    if case == "dict":
        return {"plain": "dict", "n": 1}
    if case == "str":
        return "a plain string"
    if case == "none":
        return AMLResponse(None, 201)
    if case == "json_str":
        return AMLResponse({"k": [1, 2]}, 202, json_str=True)
    if case == "png":
        return AMLResponse(b"\\x89PNG\\r\\n\\x1a\\n", 200, {"Content-Type": "image/png"})
    if case == "failed":
        return AMLResponse("the model is overloaded", 503)
    if case == "multi":
        return AMLResponse("ok", 200, {"X-Multi": "a, b", "X-One": "1"})
    if case == "file":
        upload = request.files["image"]
        return {"filename": upload.filename, "size": len(upload.read()), "form": request.form.to_dict()}
    return AMLResponse(json.dumps({
        "method": request.method,
        "args": request.args.to_dict(flat=False),
        "json": request.get_json(silent=True),
        "form": request.form.to_dict(flat=False),
        "data": request.get_data(as_text=True),
        "content_type": request.content_type,
        "custom": request.headers.get("X-Custom"),
    }), 200, {"Content-Type": "application/json"})
"""

STREAM = """
import json
from azureml_inference_server_http.api.aml_request import rawhttp
from azureml_inference_server_http.api.aml_response import AMLResponse

def init():
    pass

def generate(items):
    for item in items:
        yield "item: " + str(item) + "\\n\\n"

@rawhttp
def run(request):
    items = json.loads(request.get_data())["items"]
    return AMLResponse(generate(items), 200)
"""

WERKZEUG_RESPONSE = """
from werkzeug.wrappers import Response

def init():
    pass

def run(data):
    return Response("plain text " + data, status=200, mimetype="text/plain")
"""
