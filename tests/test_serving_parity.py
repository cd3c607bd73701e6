"""Drop-in parity with Azure ML's inference server, over real HTTP on 127.0.0.1.

Each test states what Azure ML's server (azureml-inference-server-http 1.5) answers, checked
against the real server by tests/test_serving_reference.py, or a deliberate 4xx where it answers
500 to a client mistake (README: "Parity with Azure ML's inference server"). The behaviours of the
reference's own end-to-end suite that a drop-in must match are here too: scripts that load, crash
or fail to bind; the environment a script sees; print() output; the azureml.contrib import path;
streaming; the swagger document.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from serving import __version__
from serving import models
from tests import serving_scripts as scripts
from tests.helpers import ROOT, STARTUP_S, Served, serve, start_process, stop_process, wait_ready, write_script

TEXT = {"content-type": "text/plain"}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def module_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("parity")


def _serve_module(module_tmp: Path, name: str, source: str, **env: str) -> Iterator[Served]:
    folder = module_tmp / name
    folder.mkdir()
    with serve(write_script(folder, source), folder, None, **env) as s:
        yield s


@pytest.fixture(scope="module")
def plain(module_tmp) -> Iterator[Served]:
    yield from _serve_module(module_tmp, "plain", scripts.PLAIN)


@pytest.fixture(scope="module")
def numpy_service(module_tmp) -> Iterator[Served]:
    yield from _serve_module(module_tmp, "numpy", scripts.NUMPY_SCHEMA)


@pytest.fixture(scope="module")
def raw(module_tmp) -> Iterator[Served]:
    yield from _serve_module(module_tmp, "raw", scripts.RAW)


def post(s: Served, body: bytes, headers: dict[str, str] | None = None, path: str = "/score") -> httpx.Response:
    return httpx.post(s.url + path, content=body, headers=headers or {}, timeout=30)


# ---- what run() returns -----------------------------------------------------------------------

@pytest.mark.parametrize("data,body", [
    (b"world", b'"Hello world"'),                      # a str is a JSON string
    (b"error", b'"Error: the input is wrong"'),         # error strings too
    (b"dumps", b'"{\\"a\\": 1}"'),                      # json.dumps(...) is sent as a JSON string
    (b"none", b"{}"),                                   # None is an empty object
    (b"dict", b'{"a": [1, 2.5, "x"], "b": null, "c": {"d": true}}'),
    (b"list", b"[1, 2]"),
    (b"float", b"0.30000000000000004"),
    (b"nan", b"NaN"),
    (b"unicode", b'"h\\u00e9llo \\u2713"'),
])
def test_run_results_are_json_as_azure_ml_sends_them(plain, data, body):
    r = post(plain, data, TEXT)
    assert r.status_code == 200 and r.content == body
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-ms-run-function-failed"] == "False"


def test_numpy_and_bytes_results_are_answered_not_500(plain):
    # Azure ML answers 500 to both; this runtime sends what the script meant.
    assert post(plain, b"numpy", TEXT).json() == [1, 2]
    r = post(plain, b"bytes", TEXT)
    assert r.content == b"raw bytes" and r.headers["content-type"] == "application/octet-stream"


def test_exception_in_run_is_a_500_flagged_as_the_scripts(plain):
    r = post(plain, b"raise", TEXT)
    assert r.status_code == 500 and r.headers["x-ms-run-function-failed"] == "True"
    assert "ValueError" in r.json()["message"] and r.json()["error"] == r.json()["message"]


# ---- undecorated scripts take any body ----------------------------------------------------------

@pytest.mark.parametrize("content_type,body,expected", [
    ("application/octet-stream", b"caf\xc3\xa9", "Hello caf\u00e9"),
    ("application/x-www-form-urlencoded", b"a=1&b=two", "Hello a=1&b=two"),
    ("application/xml", b"<x/>", "Hello <x/>"),
    ("application/json", b"world", "Hello world"),
    (None, b"world", "Hello world"),
])
def test_undecorated_run_gets_the_body_whatever_the_content_type(plain, content_type, body, expected):
    r = post(plain, body, {"content-type": content_type} if content_type else {})
    assert r.status_code == 200 and r.json() == expected


def test_body_that_is_not_utf8_is_a_400(plain):
    r = post(plain, b"\xff\xfe", {"content-type": "application/octet-stream"})
    assert r.status_code == 400 and "UTF-8" in r.json()["message"]


def test_get_score_passes_the_query_as_json_text(plain):
    r = httpx.get(plain.url + "/score?a=1&b=[1,2]&c=x&c=y&d=null")
    assert r.status_code == 200
    assert r.json() == 'Hello {"a": 1, "b": [1, 2], "c": ["x", "y"], "d": null}'


def test_options_and_other_methods_on_score(plain):
    r = httpx.options(plain.url + "/score")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-type"] == "text/html; charset=utf-8"
    r = httpx.put(plain.url + "/score", content=b"x")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST, OPTIONS"


def test_options_on_the_other_routes_answers_like_flask(plain):
    """Azure ML's server answers OPTIONS on every route (Flask's automatic OPTIONS): 200, no body."""
    for path in ("/", "/ready", "/swagger.json"):
        r = httpx.options(plain.url + path)
        assert r.status_code == 200 and r.content == b"" and r.headers["allow"] == "GET, HEAD, OPTIONS"
    r = httpx.post(plain.url + "/swagger.json")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, OPTIONS" and r.json()["error"]


# ---- response headers ---------------------------------------------------------------------------

def test_azure_ml_response_headers(plain):
    r = post(plain, b"x", {**TEXT, "x-ms-client-request-id": "client-7", "TraceId": "trace-1"})
    assert r.headers["x-ms-server-version"] == f"ml-deploy-serving/{__version__}"
    assert r.headers["x-ms-client-request-id"] == "client-7" and r.headers["x-ms-request-id"] == "client-7"
    assert r.headers["traceid"] == "trace-1"
    assert float(r.headers["x-ms-run-fn-exec-ms"]) >= 0 and len(r.headers["x-ms-run-fn-exec-ms"].split(".")[1]) == 3
    generated = post(plain, b"x", TEXT)
    assert generated.headers["x-ms-request-id"] == generated.headers["x-request-id"]
    legacy = post(plain, b"x", {**TEXT, "x-ms-request-id": "legacy-1"})
    assert legacy.headers["x-ms-request-id"] == "legacy-1" and legacy.headers["x-ms-client-request-id"] == "legacy-1"


def test_request_ids_over_100_characters_are_a_431(plain):
    r = post(plain, b"x", {**TEXT, "x-request-id": "r" * 101})
    assert r.status_code == 431 and "100 characters" in r.json()["message"]
    assert r.headers["x-request-id"] != "r" * 101


def test_liveness_answers_healthy_as_text(plain):
    r = httpx.get(plain.url + "/")
    assert r.status_code == 200 and r.content == b"Healthy"
    assert r.headers["content-type"] == "text/html; charset=utf-8"


def test_server_version_header_can_be_turned_off(tmp_path):
    script = write_script(tmp_path, scripts.PLAIN)
    with serve(script, tmp_path, SERVER_VERSION_LOG_RESPONSE_ENABLED="false") as s:
        assert "x-ms-server-version" not in post(s, b"x", TEXT).headers


def test_cors_for_the_configured_origins(tmp_path):
    script = write_script(tmp_path, scripts.PLAIN)
    with serve(script, tmp_path, AML_CORS_ORIGINS="http://a.example, http://b.example") as s:
        r = post(s, b"x", {**TEXT, "origin": "http://b.example"})
        assert r.headers["access-control-allow-origin"] == "http://b.example" and r.headers["vary"] == "Origin"
        assert "access-control-allow-origin" not in post(s, b"x", {**TEXT, "origin": "http://evil.example"}).headers
        pre = httpx.options(s.url + "/score", headers={
            "origin": "http://a.example", "access-control-request-method": "POST",
            "access-control-request-headers": "Content-Type, Authorization"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "http://a.example"
        assert pre.headers["access-control-allow-methods"] == "GET, POST"
        assert pre.headers["access-control-allow-headers"] == "Authorization, Content-Type"


def test_cors_preflight_needs_no_key_and_any_origin_is_allowed_with_a_star(tmp_path):
    script = write_script(tmp_path, scripts.PLAIN)
    with serve(script, tmp_path, AML_CORS_ORIGINS="*", SCORING_AUTH_KEYS="k1") as s:
        pre = httpx.options(s.url + "/score", headers={"origin": "http://x.example",
                                                        "access-control-request-method": "POST"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://x.example"
        assert post(s, b"x", TEXT).headers["access-control-allow-origin"] == "*"
        assert post(s, b"x", TEXT).status_code == 401


# ---- schema-decorated scripts -----------------------------------------------------------------

def test_decorated_script_ignores_extra_keys(numpy_service):
    r = post(numpy_service, b'{"data": [[1, 2], [3, 4.5]], "method": "predict"}', JSON)
    assert r.status_code == 200 and r.content == b"[3.0, 7.5]"


def test_decorated_script_takes_get_query_and_json_subtypes(numpy_service):
    assert httpx.get(numpy_service.url + "/score?data=[[1,2]]").content == b"[3.0]"
    assert post(numpy_service, b'{"data": [[1, 2]]}', {"content-type": "application/vnd.api+json"}).content == b"[3.0]"


@pytest.mark.parametrize("body,headers,status,words", [
    (b"{}", JSON, 400, "missing input 'data'"),
    (b"", JSON, 400, "empty"),
    (b"[1]", JSON, 400, "must be a JSON object"),
    (b"{bad", JSON, 400, "not valid JSON"),
    (b'{"data": [[1, 2]]}', TEXT, 415, "send application/json"),
    (b'{"data": "not an array"}', JSON, 400, "does not match run()'s schema"),  # Azure ML: 500
])
def test_decorated_script_refuses_bad_input_precisely(numpy_service, body, headers, status, words):
    r = post(numpy_service, body, headers)
    assert r.status_code == status and words in r.json()["message"], r.text


def test_pandas_dtype_mismatch_is_a_400(tmp_path):
    with serve(write_script(tmp_path, scripts.PANDAS_SCHEMA), tmp_path) as s:
        ok = post(s, b'{"data": [{"a": 1, "b": 2.5, "c": "y"}, {"a": 2, "b": 0, "c": "z"}], "scale": 3}', JSON)
        assert ok.status_code == 200 and ok.json() == {"rows": 2, "total": 11.5}
        r = post(s, b'{"data": [{"a": "one", "b": 2.5, "c": "y"}], "scale": 1}', JSON)
        assert r.status_code == 400 and "does not match run()'s schema" in r.json()["message"]
        assert r.headers["content-type"] == "application/json"


def test_run_receives_request_headers_when_it_asks(tmp_path):
    with serve(write_script(tmp_path, scripts.HEADERS), tmp_path) as s:
        r = post(s, b"x", {**TEXT, "x-custom": "hello", "x-ms-client-request-id": "c-2"})
    assert r.json() == {"data": "x", "custom": "hello", "content_type": "text/plain",
                        "x_names": ["X-Custom", "X-Ms-Client-Request-Id"]}


# ---- @rawhttp ---------------------------------------------------------------------------------

def test_rawhttp_get_sees_the_full_path(raw):
    r = httpx.get(raw.url + "/score?a=1&b=2")
    assert r.status_code == 200 and r.content == b"/score?a=1&b=2"
    assert r.headers["content-type"] == "text/html; charset=utf-8"


def test_rawhttp_post_sees_the_request(raw):
    r = post(raw, b'{"j": 1}', {**JSON, "x-custom": "c"}, path="/score?a=1&a=2")
    assert r.json() == {"method": "POST", "args": {"a": ["1", "2"]}, "json": {"j": 1}, "form": {},
                        "data": '{"j": 1}', "content_type": "application/json", "custom": "c"}


def test_rawhttp_gets_form_and_binary_posts(raw):
    form = post(raw, b"a=1&b=two", {"content-type": "application/x-www-form-urlencoded"}).json()
    assert form["form"] == {"a": ["1"], "b": ["two"]}
    binary = post(raw, b"\x00\x01binary", {"content-type": "application/octet-stream"}).json()
    assert binary["data"] == "\x00\x01binary"
    upload = httpx.post(raw.url + "/score?case=file", files={"image": ("cat.png", b"\x89PNG" + b"\0" * 100, "image/png")},
                        data={"label": "cat"})
    assert upload.json() == {"filename": "cat.png", "size": 104, "form": {"label": "cat"}}


@pytest.mark.parametrize("case,status,content_type,body,failed", [
    ("dict", 200, "application/json", b'{"plain": "dict", "n": 1}', "False"),
    ("str", 200, "application/json", b'"a plain string"', "False"),
    ("none", 201, "application/json", b"{}", "False"),
    ("json_str", 202, "application/json", b'{"k": [1, 2]}', "False"),
    ("png", 200, "image/png", b"\x89PNG\r\n\x1a\n", "False"),
    ("failed", 503, "text/html; charset=utf-8", b"the model is overloaded", "True"),
])
def test_rawhttp_responses(raw, case, status, content_type, body, failed):
    r = post(raw, b"x", TEXT, path=f"/score?case={case}")
    assert (r.status_code, r.headers["content-type"], r.content) == (status, content_type, body)
    assert r.headers["x-ms-run-function-failed"] == failed


def test_aml_response_headers_with_commas_are_repeated(raw):
    r = post(raw, b"x", TEXT, path="/score?case=multi")
    assert r.headers.get_list("x-multi") == ["a", "b"] and r.headers["x-one"] == "1"


def test_azureml_contrib_services_import_path(tmp_path):
    # The reference suite's score_aml_contrib_services_import.py, in our words.
    script = write_script(tmp_path, """
        from azureml.contrib.services.aml_request import AMLRequest, rawhttp
        from azureml.contrib.services.aml_response import AMLResponse

        def init():
            print("Initializing")

        @rawhttp
        def run(request: AMLRequest):
            return AMLResponse({"method": request.method}, 200, json_str=True)
    """)
    with serve(script, tmp_path) as s:
        r = post(s, b"", TEXT)
    assert r.status_code == 200 and r.json() == {"method": "POST"}


def test_generator_response_is_streamed_chunk_by_chunk(tmp_path):
    gate = tmp_path / "gate"
    script = write_script(tmp_path, f"""
        import pathlib, time
        from azureml.contrib.services.aml_request import rawhttp
        from azureml.contrib.services.aml_response import AMLResponse

        def init():
            pass

        def generate():
            yield "first\\n"
            # The second chunk only once the client has read the first: proves it was sent alone.
            deadline = time.monotonic() + 30
            while not pathlib.Path({str(gate)!r}).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
            yield "second\\n"

        @rawhttp
        def run(request):
            return AMLResponse(generate(), 200)
    """)
    with serve(script, tmp_path) as s:
        with httpx.stream("POST", s.url + "/score", content=b"{}") as r:
            assert r.status_code == 200 and "content-length" not in r.headers
            chunks = r.iter_raw()
            assert next(chunks) == b"first\n"
            gate.write_text("go")
            assert b"".join(chunks) == b"second\n"


# ---- the script's environment and output ----------------------------------------------------

def test_script_sees_aml_app_root_and_its_entry_script(tmp_path):
    model_dir = tmp_path / "my" / "dir"
    model_dir.mkdir(parents=True)
    script = write_script(tmp_path, """
        import os
        def init():
            pass
        def run(data):
            return {k: os.environ[k] for k in ("AML_APP_ROOT", "AZUREML_ENTRY_SCRIPT", "AZUREML_MODEL_DIR")}
    """, name="score_env.py")
    with serve(script, tmp_path, model_dir=model_dir) as s:
        r = post(s, b"x", TEXT)
    # The tests start the server in the project folder: the app root is the working directory.
    assert r.json() == {"AML_APP_ROOT": str(ROOT), "AZUREML_ENTRY_SCRIPT": str(script),
                        "AZUREML_MODEL_DIR": str(model_dir)}


def test_print_output_is_written_at_once_and_survives_a_kill(tmp_path):
    script = write_script(tmp_path, """
        def init():
            print("Initializing")
        def run(data):
            print("A new request received~~~", end="")
            return "ok"
    """)
    proc, url, log = start_process(script, None, {}, tmp_path)
    try:
        wait_ready(proc, url, log)
        assert httpx.post(url + "/score", content=b"x").status_code == 200
        proc.kill()  # no chance to flush a buffer
        proc.wait(timeout=30)
    finally:
        stop_process(proc)
    text = log.read_text()
    assert "Initializing" in text and text.count("A new request received~~~") == 1


# ---- starting up ------------------------------------------------------------------------------

def _exit_code(script: Path, tmp_path: Path) -> tuple[int, str]:
    proc, _url, log = start_process(script, None, {}, tmp_path)
    try:
        return proc.wait(timeout=STARTUP_S), log.read_text()
    finally:
        stop_process(proc)


def test_missing_entry_script_exits_non_zero(tmp_path):
    code, text = _exit_code(tmp_path / "missing_score.py", tmp_path)
    assert code != 0 and "does not exist" in text


def test_invalid_indentation_exits_non_zero_naming_the_error(tmp_path):
    script = tmp_path / "invalid_indent_score.py"
    script.write_text("def init():\n        pass\n    x = 1\n\ndef run(data):\n    return data\n")
    code, text = _exit_code(script, tmp_path)
    assert code != 0 and "IndentationError" in text and "unindent does not match" in text


def test_no_entry_script_exits_non_zero():
    env = {k: v for k, v in os.environ.items() if k != "AZUREML_ENTRY_SCRIPT"}
    done = subprocess.run([sys.executable, "-m", "serving"], env=env, capture_output=True, timeout=STARTUP_S)
    assert done.returncode != 0 and b"no entry script" in done.stderr


def test_port_in_use_fails_the_second_server_and_the_first_keeps_serving(tmp_path):
    script = write_script(tmp_path, scripts.PLAIN)
    with serve(script, tmp_path) as first:
        port = int(first.url.rsplit(":", 1)[1])
        second = subprocess.run([sys.executable, "-m", "serving", "--entry-script", str(script), "--port", str(port)],
                                capture_output=True, timeout=STARTUP_S, cwd=ROOT)
        assert second.returncode != 0 and b"Address already in use" in second.stderr
        assert post(first, b"x", TEXT).json() == "Hello x"


# ---- swagger ----------------------------------------------------------------------------------

def test_swagger_has_azure_ml_layout(numpy_service):
    r = httpx.get(numpy_service.url + "/swagger.json")
    assert r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["swagger"] == "2.0" and doc["info"]["title"] == "ML service"
    assert set(doc["paths"]) == {"/", "/score", "/swagger.json"}
    assert doc["paths"]["/score"]["post"]["parameters"][0]["schema"] == {"$ref": "#/definitions/ServiceInput"}
    assert doc["definitions"]["ServiceInput"]["properties"]["data"]["type"] == "array"
    assert doc["definitions"]["ServiceOutput"]["type"] == "array"
    assert set(doc["definitions"]) == {"ServiceInput", "ServiceOutput", "ErrorResponse"}


def test_swagger_openapi3_on_request(numpy_service):
    v3 = httpx.get(numpy_service.url + "/swagger.json?version=3").json()
    assert v3["openapi"] == "3.0.3" and v3["components"]["schemas"]["ServiceInput"]["type"] == "object"
    assert v3["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ServiceInput"}
    assert httpx.get(numpy_service.url + "/swagger.json?version=3.1").json()["openapi"] == "3.1.0"
    bad = httpx.get(numpy_service.url + "/swagger.json?version=4")
    assert bad.status_code == 404 and "Supported versions: [2, 3, 3.1]" in bad.json()["message"]


def test_swagger_title_prefix_and_a_users_own_document(tmp_path):
    script = write_script(tmp_path, scripts.PLAIN)
    with serve(script, tmp_path, SERVICE_NAME="diabetes", SERVICE_PATH_PREFIX="api/v1") as s:
        doc = httpx.get(s.url + "/swagger.json").json()
    assert doc["info"]["title"] == "diabetes" and "/api/v1/score" in doc["paths"]
    assert doc["definitions"]["ServiceInput"] == {"type": "object", "example": {}}
    app = tmp_path / "app"
    app.mkdir()
    (app / "swagger.json").write_text('{"swagger": "2.0", "info": {"title": "mine"}}')
    with serve(write_script(app, scripts.PLAIN), app, AML_APP_ROOT=str(app)) as s:
        assert httpx.get(s.url + "/swagger.json").json() == {"swagger": "2.0", "info": {"title": "mine"}}


# ---- Model.get_model_path ---------------------------------------------------------------------

def _tree(root: Path, files: list[str]) -> Path:
    for f in files:
        path = root / f
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f)
    return root


def test_get_model_path_in_a_service_with_several_models(tmp_path):
    models_dir = _tree(tmp_path / "azureml-models", [
        "ridge/1/ridge.pkl", "ridge/2/ridge.pkl", "ridge/10/ridge.pkl",
        "onnx/3f2a9c/model_dir/model.onnx",
    ])
    script = write_script(tmp_path, """
        import json, os
        from azureml.core.model import Model

        def init():
            pass

        def run(data):
            name, version = json.loads(data)
            try:
                path = Model.get_model_path(name, version=version)
            except Exception as err:
                return {"error": type(err).__name__}
            return os.path.relpath(path, os.environ["AZUREML_MODEL_DIR"])
    """)
    with serve(script, tmp_path, model_dir=models_dir) as s:
        def ask(name: str, version: object) -> object:
            return post(s, json.dumps([name, version]).encode(), JSON).json()

        assert ask("ridge", None) == "ridge/10/ridge.pkl"       # latest: the highest number
        assert ask("ridge", 2) == "ridge/2/ridge.pkl"
        assert ask("onnx", None) == "onnx/3f2a9c/model_dir"     # a folder model: the folder
        assert ask("onnx", "3f2a9c") == "onnx/3f2a9c/model_dir"
        assert ask("nope", None) == {"error": "ModelNotFoundException"}


def test_get_model_path_with_one_model(tmp_path, monkeypatch):
    one = _tree(tmp_path / "azureml-models" / "ridge" / "7", ["ridge.pkl"])
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(one))
    monkeypatch.setenv("AML_APP_ROOT", str(tmp_path / "elsewhere"))
    assert models.get_model_path("ridge") == str(one / "ridge.pkl")
    assert models.get_model_path("ridge", 7) == str(one / "ridge.pkl")
    with pytest.raises(models.ModelNotFoundException):
        models.get_model_path("other")


def test_get_model_path_rules_of_azureml_core(tmp_path, monkeypatch):
    app = _tree(tmp_path / "app", ["azureml-models/m/1/a.pkl", "azureml-models/m/1/b.pkl",
                                   "azureml-models/d/x/f", "azureml-models/d/y/f", "local_model.pkl"])
    monkeypatch.delenv("AZUREML_MODEL_DIR", raising=False)
    monkeypatch.setenv("AML_APP_ROOT", str(app))
    monkeypatch.chdir(app)
    with pytest.raises(models.WebserviceException, match="can contain only 1 file or folder"):
        models.get_model_path("m")
    with pytest.raises(models.WebserviceException, match="pass the version"):
        models.get_model_path("d")
    assert models.get_model_path("d", "y") == str(app / "azureml-models/d/y/f")
    assert models.get_model_path("local_model.pkl") == "local_model.pkl"  # ./<name>, as azureml-core


def test_installed_azureml_core_wins_over_the_stand_in(tmp_path):
    site = tmp_path / "site"
    _tree(site, ["azureml/core/model.py"])
    (site / "azureml" / "__init__.py").write_text("__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n")
    (site / "azureml" / "core" / "__init__.py").write_text("")
    (site / "azureml" / "core" / "model.py").write_text(
        "class Model:\n    @staticmethod\n    def get_model_path(name, version=None):\n        return 'real:' + name\n")
    script = write_script(tmp_path, """
        from azureml.core.model import Model
        from azureml.contrib.services.aml_response import AMLResponse

        def init():
            pass

        def run(data):
            return AMLResponse({"path": Model.get_model_path("m")}, 200, json_str=True)
    """)
    with serve(script, tmp_path, PYTHONPATH=str(site)) as s:
        # azureml-core as installed answers; the stand-in still fills in azureml.contrib.
        assert post(s, b"x", TEXT).json() == {"path": "real:m"}


@pytest.mark.skipif(importlib.util.find_spec("azureml") is not None, reason="an azureml package is installed")
def test_stand_ins_are_not_importable_outside_the_runtime():
    # Only the runtime puts serving/compat on sys.path: deployment code never sees a fake azureml.
    done = subprocess.run([sys.executable, "-c", "import azureml.core"], capture_output=True)
    assert done.returncode != 0

