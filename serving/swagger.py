"""The service's API document in Azure ML's layout: Swagger 2.0 by default, OpenAPI 3 on request.

`GET /swagger.json` gives Swagger 2.0; `?version=3` (or `3.0`) OpenAPI 3.0.3 and `?version=3.1`
OpenAPI 3.1.0, the same documents Azure ML's server builds: the script's input and output schema
(from inference-schema's decorators) as `ServiceInput`/`ServiceOutput`, an `ErrorResponse`, and the
paths `/`, `/score` and `/swagger.json` under `SERVICE_PATH_PREFIX`, titled by `SERVICE_NAME`.
A `swagger.json`/`swagger2.json`/`swagger3.json` in the app folder is served instead, as is.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Optional

from inference_schema import schema_util

from serving.aml_env import AmlEnv

log = logging.getLogger("serving")

# Each document version, the names a client may ask for it by, and the user files that replace it.
_VERSIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "2": (("2", "2.0"), ("swagger.json", "swagger2.json")),
    "3": (("3", "3.0"), ("swagger3.json",)),
    "3.1": (("3.1",), ("swagger3.1.json",)),
}
_UNDECORATED_SCHEMA = {"type": "object", "example": {}}
_ERROR = {"type": "object", "properties": {"message": {"type": "string"}}}
_HEALTH_DESCRIPTION = "If service is up and running, this response will be returned with the content 'Healthy'"
_FAILED = "The service failed to execute due to an error."
_SCORE_DESCRIPTION = "Run web service's model and get the prediction output"
_INPUT_DESCRIPTION = "The input payload for executing the real-time machine learning service."
_OUTPUT_DESCRIPTION = "The service processed the input correctly and provided a result prediction, if applicable."
_BEARER = {"type": "apiKey", "name": "Authorization", "in": "header", "description": "For example: Bearer abc123"}


class SwaggerNotFound(Exception):
    """The requested version does not exist or does not fit the script's schema (answered 404)."""


def _swagger2(env: AmlEnv, input_schema: Any, output_schema: Any) -> dict[str, Any]:
    def failed() -> dict[str, Any]:
        return {"description": _FAILED, "schema": {"$ref": "#/definitions/ErrorResponse"}}

    p = env.service_path_prefix
    return {
        "swagger": "2.0",
        "info": _info(env),
        "schemes": ["https"],
        "consumes": ["application/json"],
        "produces": ["application/json"],
        "securityDefinitions": {"Bearer": dict(_BEARER)},
        "paths": {
            f"{p}/": {"get": {
                "operationId": "ServiceHealthCheck",
                "description": "Simple health check endpoint to ensure the service is up at any given point.",
                "responses": {
                    "200": {"description": _HEALTH_DESCRIPTION, "schema": {"type": "string"},
                            "examples": {"application/json": "Healthy"}},
                    "default": failed(),
                },
            }},
            f"{p}/score": {"post": {
                "operationId": "RunMLService",
                "description": _SCORE_DESCRIPTION,
                "security": [{"Bearer": []}],
                "parameters": [{"name": "serviceInputPayload", "in": "body", "description": _INPUT_DESCRIPTION,
                                "schema": {"$ref": "#/definitions/ServiceInput"}}],
                "responses": {
                    "200": {"description": _OUTPUT_DESCRIPTION, "schema": {"$ref": "#/definitions/ServiceOutput"}},
                    "default": failed(),
                },
            }},
            f"{p}/swagger.json": {"get": {
                "operationId": "GetSwaggerSpec",
                "description": "Get the Swagger specification.",
                "parameters": [{"name": "version", "in": "query", "required": False, "type": "integer",
                                "enum": [2, 3]}],
                "responses": {
                    "200": {"description": "The Swagger specification.", "schema": {"type": "string"}},
                    "default": failed(),
                },
            }},
        },
        "definitions": {"ServiceInput": input_schema, "ServiceOutput": output_schema, "ErrorResponse": _ERROR},
    }


def _openapi3(env: AmlEnv, input_schema: Any, output_schema: Any, openapi: str) -> dict[str, Any]:
    def content(media: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {media: {"schema": schema}}

    def failed() -> dict[str, Any]:
        return {"description": _FAILED, "content": content("application/json",
                                                            {"$ref": "#/components/schemas/ErrorResponse"})}

    p = env.service_path_prefix
    return {
        "openapi": openapi,
        "info": _info(env),
        "security": [{"Bearer": []}],
        "paths": {
            f"{p}/": {"get": {
                "operationId": "ServiceHealthCheck",
                "description": "Simple health check endpoint to ensure the service is up at any given point.",
                "responses": {
                    "200": {"description": _HEALTH_DESCRIPTION,
                            "content": content("text/plain", {"type": "string", "example": "Healthy"})},
                    "default": failed(),
                },
            }},
            f"{p}/score": {"post": {
                "operationId": "RunMLService",
                "description": _SCORE_DESCRIPTION,
                "security": [{"Bearer": []}],
                "requestBody": {"description": _INPUT_DESCRIPTION,
                                "content": content("application/json", {"$ref": "#/components/schemas/ServiceInput"})},
                "responses": {
                    "200": {"description": _OUTPUT_DESCRIPTION,
                            "content": content("application/json", {"$ref": "#/components/schemas/ServiceOutput"})},
                    "default": failed(),
                },
            }},
            f"{p}/swagger.json": {"get": {
                "operationId": "GetSwaggerSpec",
                "description": "Get the Swagger specification.",
                "parameters": [{"name": "version", "in": "query", "required": False,
                                "schema": {"type": "integer", "enum": [2, 3]}}],
                "responses": {
                    "200": {"description": "The Swagger specification.",
                            "content": content("text/plain", {"type": "string"})},
                    "default": failed(),
                },
            }},
        },
        "components": {
            "schemas": {"ServiceInput": input_schema, "ServiceOutput": output_schema, "ErrorResponse": _ERROR},
            "securitySchemes": {"Bearer": dict(_BEARER)},
        },
    }


def _info(env: AmlEnv) -> dict[str, str]:
    return {"title": env.service_name,
            "description": f"API specification for the Azure Machine Learning service {env.service_name}",
            "version": env.service_version}


class Swagger:
    """The documents of one script, built once: `get(version)` answers `GET /swagger.json?version=`."""

    def __init__(self, run: Callable[..., Any], decorated: bool, app_root: Optional[Path], env: AmlEnv):
        self.documents: dict[str, bytes] = {}
        supported = set(schema_util.get_supported_versions(run))
        if decorated:
            input_schema = schema_util.get_input_schema(run)
            output_schema = schema_util.get_output_schema(run)
        else:
            input_schema = output_schema = _UNDECORATED_SCHEMA
        for version, (aliases, user_files) in _VERSIONS.items():
            doc = _read_user_document(app_root, user_files)
            if doc is None and supported & set(aliases):
                if version == "2":
                    doc = _swagger2(env, input_schema, output_schema)
                else:
                    doc = _openapi3(env, input_schema, output_schema, "3.0.3" if version == "3" else "3.1.0")
            if doc is not None:
                body = json.dumps(doc).encode()
                for alias in aliases:
                    self.documents[alias] = body
        self.available = sorted(v for v, (aliases, _) in _VERSIONS.items() if aliases[0] in self.documents)

    def get(self, version: Optional[str]) -> bytes:
        """The document for `?version=` (2 when absent); raises SwaggerNotFound."""
        version = version or "2"
        known = {a for aliases, _ in _VERSIONS.values() for a in aliases}
        if version not in known:
            raise SwaggerNotFound(f"Swagger version [{version}] is not valid. "
                                  f"Supported versions: [{', '.join(self.available)}].")
        if version not in self.documents:
            raise SwaggerNotFound(f"Swagger version [{version}] is not supported for the scoring script. "
                                  f"Supported swagger versions: [{', '.join(self.available)}].")
        return self.documents[version]


def _read_user_document(app_root: Optional[Path], names: tuple[str, ...]) -> Optional[Any]:
    if app_root is None:
        return None
    for name in names:
        path = app_root / name
        if path.is_file():
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                log.error("ignoring %s: %s", path, err)
                continue
            log.info("serving the swagger document %s as is", path)
            return doc
    return None
