"""Load an Azure ML scoring script (`init()`, `run()`) and call it the way Azure ML's server does.

How `run()` is called depends on the script, as in Azure ML:
- `@rawhttp`: `run(request)` with the HTTP request itself (`serving.raw.AMLRequest`), any method;
- `@input_schema` (inference-schema): `run(**params)`, each taken from the JSON body's top-level key
  of that name (other keys are ignored; a missing one takes the parameter's default) or, for
  `GET /score?...`, from the query string;
- otherwise: `run(<body as text>)`, whatever the content type; for `GET /score?...` the query as
  a JSON object in text.
A `request_headers` parameter, when `run()` declares one, receives the request's headers as a dict.
"""

from __future__ import annotations

import importlib.util
import inspect
import io
import json
import os
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Callable, Iterator, Mapping, Optional
from urllib.parse import parse_qsl

import inference_schema
from inference_schema import schema_util

from serving import aml_env
from serving import settings as names

COMPAT_DIR = Path(__file__).resolve().parent / "compat"
"""Stand-ins for `azureml.core.model`, `azureml.contrib.services`, ... (see compat/README.md)."""

JSON_TYPES = ("application/json", "text/json")
# Modules whose `rawhttp` marks the script as raw: ours, and the real packages' when installed.
_RAW_FLAGS = (
    ("serving.raw", "_raw_http_requested"),
    ("azureml.contrib.services.aml_request", "_rawHttpRequested"),
    ("azureml_inference_server_http.api.aml_request", "_rawHttpRequested"),
)


class ScriptLoadError(Exception):
    """The script could not be imported or lacks `init`/`run`."""


class RequestError(Exception):
    """A request this script cannot take; answered with `status` and the message as JSON."""

    status = 400

    def __init__(self, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()):
        super().__init__(message)
        self.headers = headers


class BadInput(RequestError):
    """The request does not fit what `run()` takes (400)."""


class UnsupportedMediaType(RequestError):
    status = 415


class MethodNotAllowed(RequestError):
    status = 405


@dataclass
class Result:
    """What to answer for `run()`'s return value: a body, or chunks to stream."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""
    chunks: Optional[Iterator[bytes]] = field(default=None)


_SCHEMA_PACKAGE = str(Path(inference_schema.__file__).resolve().parent)


def _raised_in_schema_conversion(tb: Optional[TracebackType], user_code: Any) -> bool:
    """Whether an exception came from inference-schema's input conversion, before run()'s own body ran."""
    through_schema = False
    while tb is not None:
        code = tb.tb_frame.f_code
        if code is user_code:
            return False
        if str(Path(code.co_filename).resolve()).startswith(_SCHEMA_PACKAGE):
            through_schema = True
        tb = tb.tb_next
    return through_schema


def _unbuffer_output() -> None:
    """Send the script's print() output to the OS at once, so a killed worker loses none of it."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not isinstance(stream, io.TextIOWrapper):
            continue
        try:
            fd = stream.fileno()
        except (OSError, ValueError):  # a stream with no file behind it (a host's capture): left as it is
            continue
        stream.flush()
        raw = io.FileIO(fd, "w", closefd=False)
        setattr(sys, name, io.TextIOWrapper(raw, encoding=stream.encoding, errors=stream.errors,
                                            write_through=True))


def raw_http_requested() -> bool:
    """Whether the loaded script used `@rawhttp` (from any of the modules that provide it)."""
    return any(getattr(sys.modules.get(module), flag, False) is True for module, flag in _RAW_FLAGS)


def request_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers as Azure ML's server hands them to `run()`: `Content-Type`-style names, repeats joined."""
    result: dict[str, str] = {}
    for name, value in headers:
        key = name.decode("latin-1").replace("_", "-").title()
        text = value.decode("latin-1")
        result[key] = f"{result[key]},{text}" if key in result else text
    return result


def _query_values(query: bytes) -> dict[str, Any]:
    """`?a=1&b=[1,2]&c=x&c=y` as `{"a": 1, "b": [1, 2], "c": ["x", "y"]}` (each value as JSON when it parses)."""
    grouped: dict[str, list[Any]] = {}
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        grouped.setdefault(key, []).append(parsed)
    return {k: v[0] if len(v) == 1 else v for k, v in grouped.items()}


class ScoringScript:
    """A loaded scoring script."""

    def __init__(self, path: str | Path):
        self.path = str(Path(path).resolve())
        self._prepare_environment()
        self.module = self._load()
        init = getattr(self.module, "init", None)
        run = getattr(self.module, "run", None)
        if not callable(init) or not callable(run):
            raise ScriptLoadError(f"{self.path} must define init() and run(); it defines "
                                  f"{', '.join(n for n in ('init', 'run') if callable(getattr(self.module, n, None))) or 'neither'}")
        # Scripts generated by some Azure ML tools forward to the real script's run() as
        # `driver_module`; Azure ML calls that run() directly, so its schema decorators apply.
        driver = getattr(self.module, "driver_module", None)
        if isinstance(driver, ModuleType) and callable(getattr(driver, "run", None)):
            run = driver.run
        self._init: Callable[[], Any] = init
        self.run: Callable[..., Any] = run
        self.decorated = schema_util.is_schema_decorated(run)
        self.raw = raw_http_requested()
        if self.raw and self.decorated:
            raise ScriptLoadError("run() cannot be decorated with both @rawhttp and @input_schema")
        # The undecorated function: its parameters are what a decorated script's JSON body holds.
        self._base = schema_util._get_decorators(run)[-1] if self.decorated else run
        params = inspect.signature(self._base).parameters
        self.wants_headers = "request_headers" in params
        self.parameters = [p for p in params.values()
                           if p.name != "request_headers" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        self.takes_any_key = any(p.kind is p.VAR_KEYWORD for p in params.values())
        if not self.parameters:
            raise ScriptLoadError(f"run() in {self.path} needs a parameter for the input data")
        self.input_name = self.parameters[0].name

    def _prepare_environment(self) -> None:
        """What Azure ML's server sets up before it imports a script."""
        os.environ[names.ENTRY_SCRIPT] = self.path
        app_root = os.environ.setdefault(aml_env.APP_ROOT, os.getcwd())
        self.app_root = Path(app_root)
        # The script's folder first, so it imports its siblings; the app root after everything,
        # as Azure ML appends it; the stand-ins last of all, so installed packages win.
        sys.path.insert(0, str(Path(self.path).parent))
        for extra in (app_root, str(COMPAT_DIR)):
            if extra not in sys.path:
                sys.path.append(extra)
        _unbuffer_output()

    def _load(self) -> ModuleType:
        path = Path(self.path)
        if not path.is_file():
            raise ScriptLoadError(f"entry script {self.path} does not exist")
        spec = importlib.util.spec_from_file_location("score", path)
        if spec is None or spec.loader is None:
            raise ScriptLoadError(f"cannot load {self.path} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules["score"] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:
            raise ScriptLoadError(f"importing {self.path} failed: {err!r}") from err
        return module

    def init(self) -> None:
        """Call the script's `init()`."""
        self._init()

    # ---- input ------------------------------------------------------------------------------
    def parse(self, method: str, content_type: str, query: bytes, body: bytes) -> dict[str, Any]:
        """The keyword arguments for `run()` from a non-raw request; raises a RequestError."""
        if method == "GET":
            values = _query_values(query)
            if self.decorated:
                return self._extract(values)
            return {self.input_name: json.dumps(values)}
        if method != "POST":
            raise MethodNotAllowed(f"{method} /score is not supported; POST the input",
                                   ((b"allow", b"GET, POST, OPTIONS"),))
        if not self.decorated:
            try:
                return {self.input_name: body.decode("utf-8")}
            except UnicodeDecodeError as err:
                raise BadInput(f"the request body is not valid UTF-8: {err}") from None
        if content_type and content_type not in JSON_TYPES and not content_type.endswith("+json"):
            raise UnsupportedMediaType(f"unsupported media type {content_type!r}; run() takes JSON: "
                                       "send application/json")
        if not body:
            raise BadInput("the request body is empty; send a JSON object whose keys are run()'s parameters: "
                           + ", ".join(p.name for p in self.parameters))
        try:
            data = json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadInput("the request body is not valid UTF-8") from None
        except json.JSONDecodeError as err:
            raise BadInput(f"the request body is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise BadInput("the request body must be a JSON object whose keys are run()'s parameters: "
                           + ", ".join(p.name for p in self.parameters))
        return self._extract(data)

    def _extract(self, data: Mapping[str, Any]) -> dict[str, Any]:
        # As Azure ML: each parameter from its key, the default when absent; other keys are ignored
        # (clients send extra fields such as "method"), unless run() takes **kwargs.
        missing = [p.name for p in self.parameters if p.name not in data and p.default is p.empty]
        if missing:
            raise BadInput(f"missing input {', '.join(map(repr, missing))}; run() takes: "
                           + ", ".join(p.name for p in self.parameters))
        args = {p.name: data[p.name] for p in self.parameters if p.name in data}
        if self.takes_any_key:
            args.update({k: v for k, v in data.items() if k not in args and k != "request_headers"})
        return args

    # ---- calling ----------------------------------------------------------------------------
    def call(self, args: dict[str, Any], headers: Optional[dict[str, str]] = None) -> Any:
        """Run the script; raises BadInput when the schema rejects the input."""
        if self.wants_headers:
            args = {**args, "request_headers": headers or {}}
        try:
            return self.run(**args)
        except Exception as err:
            if self.decorated and _raised_in_schema_conversion(err.__traceback__, getattr(self._base, "__code__", None)):
                raise BadInput(f"the input does not match run()'s schema: {err}") from err
            raise


def format_exception(err: BaseException) -> str:
    """A traceback for the log (never for the client)."""
    return "".join(traceback.format_exception(type(err), err, err.__traceback__))


RUN_OK = (b"x-ms-run-function-failed", b"False")
RUN_FAILED = (b"x-ms-run-function-failed", b"True")


def to_result(value: Any) -> Result:
    """`run()`'s return value as a response, as Azure ML's server answers it.

    A response object (Azure ML's AMLResponse, any Flask/Werkzeug response, or an object with
    `status_code`, a body and headers) passes through, streamed when its body is an iterable.
    Anything else is JSON: a str becomes a JSON string, None `{}`. Two additions: numpy and pandas
    values become JSON (Azure ML answers 500), and bytes go out as is as application/octet-stream.
    """
    werkzeug_response = sys.modules.get("werkzeug.wrappers.response")
    if werkzeug_response is not None and isinstance(value, werkzeug_response.Response):
        return _from_werkzeug(value)
    if isinstance(getattr(value, "status_code", None), int):
        return _from_response_like(value)
    if isinstance(value, (bytes, bytearray)):
        return Result(200, [(b"content-type", b"application/octet-stream"), RUN_OK], bytes(value))
    body = json.dumps({} if value is None else value, default=_json_default).encode("utf-8")
    return Result(200, [(b"content-type", b"application/json"), RUN_OK], body)


def _json_default(value: Any) -> Any:
    # numpy and pandas values (what models return) without importing either here.
    for attr in ("tolist", "item", "to_dict"):
        method = getattr(value, attr, None)
        if callable(method):
            return method()
    raise TypeError(f"run() returned a {type(value).__name__}, which is not JSON serializable")


_HOP_BY_HOP = {"content-length", "transfer-encoding", "connection"}


def _header_list(items: Any) -> list[tuple[bytes, bytes]]:
    pairs = items.items() if hasattr(items, "items") and not hasattr(items, "to_wsgi_list") else items
    return [(str(k).lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in pairs
            if str(k).lower() not in _HOP_BY_HOP]


def _failed_if_5xx(status: int, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    if status >= 500:
        headers = [h for h in headers if h[0] != RUN_FAILED[0]] + [RUN_FAILED]
    return headers


def _from_werkzeug(response: Any) -> Result:
    status = int(response.status_code)
    headers = _failed_if_5xx(status, _header_list(response.headers))
    if response.is_streamed:
        return Result(status, headers, chunks=iter(response.iter_encoded()))
    return Result(status, headers, response.get_data())


def _from_response_like(value: Any) -> Result:
    status = int(value.status_code)
    get_data = getattr(value, "get_data", None)
    body = get_data() if callable(get_data) else getattr(value, "body", b"")
    if isinstance(body, str):
        body = body.encode("utf-8")
    elif not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body, default=_json_default).encode("utf-8")
    headers = _failed_if_5xx(status, _header_list(getattr(value, "headers", None) or {}))
    return Result(status, headers, bytes(body))
