"""Load an Azure ML scoring script (`init()`, `run()`) and call it the way Azure ML does."""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Callable, Optional

import inference_schema
from inference_schema import schema_util


class ScriptLoadError(Exception):
    """The script could not be imported or lacks `init`/`run`."""


class BadInput(Exception):
    """The request does not fit what `run()` takes; answered with 400."""


@dataclass(frozen=True)
class Response:
    """A response that `run()` returned as an object (status, body, headers): passed through as is."""

    status: int
    body: bytes
    headers: list[tuple[bytes, bytes]]


_SCHEMA_PACKAGE = str(Path(inference_schema.__file__).resolve().parent)


def _raised_in_schema_conversion(tb: Optional[TracebackType], script: str) -> bool:
    """Whether an exception came from inference-schema's input conversion, before user code ran."""
    in_script = False
    last_file = ""
    while tb is not None:
        filename = str(Path(tb.tb_frame.f_code.co_filename).resolve())
        if filename == script:
            in_script = True
        last_file = filename
        tb = tb.tb_next
    return not in_script and last_file.startswith(_SCHEMA_PACKAGE)


class ScoringScript:
    """A loaded scoring script."""

    def __init__(self, path: str | Path):
        self.path = str(Path(path).resolve())
        self.module = self._load()
        init = getattr(self.module, "init", None)
        run = getattr(self.module, "run", None)
        if not callable(init) or not callable(run):
            raise ScriptLoadError(f"{self.path} must define init() and run(); it defines "
                                  f"{', '.join(n for n in ('init', 'run') if callable(getattr(self.module, n, None))) or 'neither'}")
        self._init: Callable[[], Any] = init
        self.run: Callable[..., Any] = run
        self.decorated = schema_util.is_schema_decorated(run)
        # The undecorated function's parameters: what a decorated script's JSON body must hold.
        base = schema_util._get_decorators(run)[-1] if self.decorated else run
        self.parameters = inspect.signature(base).parameters

    def _load(self) -> ModuleType:
        path = Path(self.path)
        if not path.is_file():
            raise ScriptLoadError(f"entry script {self.path} does not exist")
        # Azure ML puts the script's folder on sys.path, so scripts import their siblings.
        sys.path.insert(0, str(path.parent))
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

    def parse(self, body: bytes) -> Any:
        """Turn a request body into what `call` passes to `run()`; raises BadInput."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadInput("the request body is not valid UTF-8") from None
        if not self.decorated:
            return text  # Azure ML hands undecorated scripts the raw body as text.
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise BadInput(f"the request body is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise BadInput("the request body must be a JSON object whose keys are run()'s parameters: "
                           + ", ".join(self.parameters))
        unknown = sorted(set(data) - set(self.parameters))
        if unknown and not any(p.kind is p.VAR_KEYWORD for p in self.parameters.values()):
            raise BadInput(f"unexpected input {', '.join(map(repr, unknown))}; run() takes: {', '.join(self.parameters)}")
        missing = [n for n, p in self.parameters.items()
                   if p.default is p.empty and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and n not in data]
        if missing:
            raise BadInput(f"missing input {', '.join(map(repr, missing))}")
        return data

    def call(self, parsed: Any) -> Any:
        """Run the script on parsed input; raises BadInput when the schema rejects it."""
        try:
            if self.decorated:
                return self.run(**parsed)
            return self.run(parsed)
        except Exception as err:
            if self.decorated and _raised_in_schema_conversion(err.__traceback__, self.path):
                raise BadInput(f"the input does not match run()'s schema: {err}") from err
            raise

    def swagger(self, title: str) -> dict[str, Any]:
        """An OpenAPI 2.0 document for the service, from the schema decorators when present."""
        input_schema: dict[str, Any] = {"type": "string", "description": "the raw request body, passed to run() as text"}
        output_schema: dict[str, Any] = {"description": "whatever run() returns, as JSON"}
        if self.decorated:
            input_schema = schema_util.get_input_schema(self.run) or input_schema
            output_schema = schema_util.get_output_schema(self.run) or output_schema
        error = {"type": "object", "properties": {"error": {"type": "string"}, "request_id": {"type": "string"}}}
        return {
            "swagger": "2.0",
            "info": {"title": title, "version": "1.0"},
            "schemes": ["http", "https"],
            "consumes": ["application/json"],
            "produces": ["application/json"],
            "securityDefinitions": {"Bearer": {"type": "apiKey", "name": "Authorization", "in": "header"}},
            "paths": {
                "/": {"get": {"operationId": "ServiceHealthCheck", "responses": {"200": {"description": "alive"}}}},
                "/score": {
                    "post": {
                        "operationId": "RunMLService",
                        "security": [{"Bearer": []}],
                        "parameters": [{"name": "serviceInputPayload", "in": "body", "required": True,
                                        "schema": input_schema}],
                        "responses": {
                            "200": {"description": "the prediction", "schema": output_schema},
                            "400": {"description": "invalid input", "schema": error},
                            "500": {"description": "run() raised", "schema": error},
                        },
                    }
                },
            },
        }


def format_exception(err: BaseException) -> str:
    """A traceback for the log (never for the client)."""
    return "".join(traceback.format_exception(type(err), err, err.__traceback__))


def to_json(value: Any) -> bytes:
    """`run()`'s result as a JSON body; strings pass through as Azure ML does."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value, default=_json_default).encode("utf-8")


def _json_default(value: Any) -> Any:
    # numpy and pandas values (what models return) without importing either here.
    for attr in ("tolist", "item", "to_dict"):
        method = getattr(value, attr, None)
        if callable(method):
            return method()
    raise TypeError(f"run() returned a {type(value).__name__}, which is not JSON serializable")


def as_response(value: Any) -> Optional[Response]:
    """A response object returned by run() (Azure ML's AMLResponse, a Flask or our own Response)."""
    if isinstance(value, Response):
        return value
    status = getattr(value, "status_code", None)
    if not isinstance(status, int):
        return None
    get_data = getattr(value, "get_data", None)
    body = get_data() if callable(get_data) else getattr(value, "body", b"")
    body = body if isinstance(body, bytes) else to_json(body)
    raw_headers = getattr(value, "headers", {}) or {}
    items = raw_headers.items() if hasattr(raw_headers, "items") else raw_headers
    headers = [(str(k).lower().encode(), str(v).encode()) for k, v in items
               if str(k).lower() not in ("content-length", "transfer-encoding")]
    return Response(status, body, headers)
