"""Raw HTTP access for scoring scripts: `@rawhttp`, `AMLRequest` and `AMLResponse`.

Azure ML's classes are Flask's request and response with a thin layer on top, and `@rawhttp`
scripts use that whole surface (`request.files`, `request.args`, `get_json()`, generators as
bodies). Werkzeug is what Flask's request and response are, so these classes build on it instead
of imitating it; Flask itself (routing, app context) is not needed. Werkzeug is imported only by
scripts that use these classes, so other scripts pay nothing for it.

Scripts import these names from `azureml.contrib.services.aml_request` / `aml_response` or
`azureml_inference_server_http.api.aml_request` / `aml_response`: `serving/compat` provides those
modules when the real packages are absent.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any, Callable, Iterable, Mapping, Optional, TypeVar

from werkzeug.wrappers import Request, Response

F = TypeVar("F", bound=Callable[..., Any])

_raw_http_requested = False
"""Set by `@rawhttp`: like Azure ML's server, one flag per process (one script per process);
`serving.script.raw_http_requested` reads it, and the real packages' flags when those are used."""


def rawhttp(func: F) -> F:
    """Mark `run()` as taking the HTTP request itself (an `AMLRequest`) instead of parsed input."""
    global _raw_http_requested
    _raw_http_requested = True
    return func


class AMLRequest(Request):
    """The request a `@rawhttp` `run()` receives: a Werkzeug (Flask) request."""


class AMLResponse(Response):
    """A response `run()` returns as is: body, status and headers (Azure ML's constructor).

    `message` is the body (str, bytes or an iterable that is streamed chunk by chunk); with
    `json_str=True` it is JSON-encoded and sent as `application/json`; `None` sends `{}`.
    A comma in a header value sends that header once per comma-separated part.
    """

    # Flask's default (Azure ML's AMLResponse is a Flask response), not Werkzeug's text/plain.
    default_mimetype = "text/html"

    def __init__(
        self,
        message: Any,
        status_code: int,
        response_headers: Optional[Mapping[str, str]] = None,
        json_str: bool = False,
        run_function_failed: bool = False,
    ):
        headers = dict(response_headers or {})
        if message is None:
            super().__init__(json.dumps({}), status=status_code, mimetype="application/json")
        elif json_str:
            super().__init__(json.dumps(message), status=status_code, mimetype="application/json")
        else:
            super().__init__(message, status=status_code)
            if any(name.lower() == "content-type" for name in headers):
                # The loop below adds the script's own; two content types would confuse clients.
                self.headers.remove("Content-Type")
        self.headers["x-ms-run-function-failed"] = str(run_function_failed)
        for name, value in headers.items():
            for part in str(value).split(","):
                self.headers.add_header(name, part.strip())


def build_request(
    method: str,
    scope: Mapping[str, Any],
    headers: Iterable[tuple[bytes, bytes]],
    body: bytes,
) -> AMLRequest:
    """An `AMLRequest` for one ASGI request whose body has been read whole."""
    server = scope.get("server") or ("127.0.0.1", 0)
    client = scope.get("client") or ("", 0)
    raw_path = scope.get("raw_path")
    # WSGI carries the path as latin-1 text of the raw bytes; Werkzeug decodes it from there.
    path = raw_path.split(b"?", 1)[0].decode("latin-1") if raw_path else scope["path"].encode().decode("latin-1")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": scope.get("root_path", ""),
        "PATH_INFO": path,
        "QUERY_STRING": scope.get("query_string", b"").decode("latin-1"),
        "SERVER_NAME": str(server[0]),
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "REMOTE_ADDR": str(client[0]),
        "REMOTE_PORT": str(client[1]),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        # The body is complete: Werkzeug may read to its end even without a content length (chunked).
        "wsgi.input_terminated": True,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in headers:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    return AMLRequest(environ)
