"""LitServe HTTP API: POST an image, get its polyp mask (PNG) or a JSON description.

``POST /predict``
  * multipart form: ``file`` (the image), optional ``format`` (``png`` | ``json``), ``threshold``;
  * or JSON: ``{"image": "<base64>", "format": "json", "threshold": 0.5}``.
``GET /health``, ``GET /info`` (model metadata), ``GET /openapi.json`` and ``/docs``.
"""

# No `from __future__ import annotations` here: LitServe reads decode_request's annotation at
# run time, and a string "Request" would make it queue the raw, unpicklable Starlette request.
import contextlib
import json
import os
import signal
import warnings
from pathlib import Path

import litserve as ls
from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request as StarletteRequest

from polypseg.runtime.model_files import locate_onnx
from polypseg.runtime.predictor import OnnxPredictor
from polypseg.serving import NOTICE, die_with_parent
from polypseg.serving.codec import BadImage, decode_base64, decode_image, describe, png_bytes

FORMATS = ("png", "json")
# batch/unbatch are the identity and serve max_batch_size 1 and > 1 alike
warnings.filterwarnings("ignore", message="The LitServer has both batch and unbatch")


def _option(payload, key: str, default):
    value = payload.get(key, default)
    return default if value in (None, "") else value


class RequestGuard:
    """ASGI middleware: bodies LitServe cannot parse (bad JSON, malformed multipart, other types,
    too large) get a 4xx with a message here, instead of a 500 inside LitServe."""

    FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")

    def __init__(self, app, path: str = "/predict", max_bytes: int = 20 * 1024 * 1024):
        self.app, self.path, self.max_bytes = app, path, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        # HTTP header bytes are latin-1 (RFC 9110); a UTF-8 decode would 500 on a stray byte
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in (*self.FORMS, "application/json"):
            message = (
                "send multipart/form-data with 'file', or application/json with base64 'image'"
            )
            return await _reply(send, 415, message)
        body, more = b"", True
        while more:
            try:  # LitServe's own size limit raises from inside receive()
                message = await receive()
            except StarletteHTTPException as exc:
                return await _reply(send, exc.status_code, str(exc.detail))
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await _reply(
                    send, 413, f"request body over {self.max_bytes // (1024 * 1024)} MB"
                )

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        if kind == "application/json":
            try:
                json.loads(body)
            except (
                ValueError,
                RecursionError,
            ):  # RecursionError: nesting deeper than Python's stack
                return await _reply(
                    send, 400, "request body is not valid JSON (or nested too deep)"
                )
        else:
            try:
                await StarletteRequest(scope, replay).form()
            except Exception as exc:  # starlette raises its own HTTPException, LitServe would 500
                return await _reply(
                    send, 400, f"malformed {kind} body ({getattr(exc, 'detail', exc)})"
                )
        return await self.app(scope, replay, send)


async def _reply(send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class PolypSegAPI(ls.LitAPI):
    """One ONNX session per worker; requests may be batched (images differ in size, the network input does not)."""

    def __init__(self, model: str | Path, threads: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model_path, self.threads = str(model), threads

    def setup(self, device) -> None:
        die_with_parent()  # a SIGKILLed `polypseg serve` must not leave this worker behind
        self.predictor = OnnxPredictor(self.model_path, self.threads)

    def decode_request(self, request: Request) -> dict:
        try:
            if hasattr(request, "getlist"):  # multipart / form
                upload = request.get("file")
                if upload is None or not hasattr(upload, "file"):
                    raise BadImage("multipart request needs a 'file' field with the image")
                data = upload.file.read()
            elif isinstance(request, dict):
                if "image" not in request:
                    raise BadImage("JSON request needs an 'image' field (base64)")
                data = decode_base64(request["image"])
            else:
                raise BadImage("send multipart/form-data with 'file' or JSON with base64 'image'")
            fmt = str(_option(request, "format", "png")).lower()
            if fmt not in FORMATS:
                raise BadImage(f"format must be one of {FORMATS}, got {fmt!r}", 422)
            threshold = _option(request, "threshold", self.predictor.processing.threshold)
            try:
                threshold = float(threshold)
            except (TypeError, ValueError):
                raise BadImage(
                    f"threshold must be a number in (0, 1), got {threshold!r}", 422
                ) from None
            if not 0.0 < threshold < 1.0:
                raise BadImage(f"threshold must be in (0, 1), got {threshold}", 422)
            return {"image": decode_image(data), "format": fmt, "threshold": threshold}
        except BadImage as exc:
            raise HTTPException(exc.status, str(exc)) from None
        except (TypeError, ValueError) as exc:
            raise HTTPException(422, f"bad request option: {exc}") from None

    def batch(self, inputs: list[dict]) -> list[dict]:
        return inputs

    def predict(self, inputs: dict | list[dict]) -> dict | list[dict]:
        items = inputs if isinstance(inputs, list) else [inputs]
        predictions = self.predictor.predict_many(
            [i["image"] for i in items], [i["threshold"] for i in items]
        )
        outputs = [
            {
                "mask": p.mask,
                "probability": p.probability,
                "format": i["format"],
                "threshold": p.threshold,
            }
            for i, p in zip(items, predictions, strict=True)
        ]
        return outputs if isinstance(inputs, list) else outputs[0]

    def unbatch(self, output: list[dict]) -> list[dict]:
        return output

    def encode_response(self, output: dict):
        if output["format"] == "png":
            return Response(content=png_bytes(output["mask"]), media_type="image/png")
        return {
            **describe(output["mask"], output["probability"], output["threshold"]),
            "notice": NOTICE,
        }


def _body_schema(field: str, spec: dict) -> dict:
    """Object schema: the image field plus the options both encodings share."""
    options = {
        "format": {"type": "string", "enum": list(FORMATS), "default": "png"},
        "threshold": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    }
    return {
        "schema": {"type": "object", "required": [field], "properties": {field: spec, **options}}
    }


PREDICT_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": _body_schema(
            "file",
            {
                "type": "string",
                "format": "binary",
                "minLength": 1,
                "description": "JPEG/PNG/TIFF/BMP image",
            },
        ),
        "application/json": _body_schema(
            "image",
            {
                "type": "string",
                "contentEncoding": "base64",
                "minLength": 1,
                "description": "base64 image bytes",
            },
        ),
    },
}
PREDICT_RESPONSES = {
    "200": {
        "description": "PNG mask (0/255) at the image's size, or JSON with area, boxes, contours",
        "content": {"image/png": {}, "application/json": {}},
    },
    "400": {"description": "not an image, truncated, empty, or missing field"},
    "413": {"description": "upload too large, or a frame over 4096 px a side / 8.8 MP / 3:1"},
    "415": {"description": "unsupported content or image type (e.g. a floating-point TIFF)"},
    "422": {"description": "bad option (format, threshold)"},
}


def json_replies(app, paths: tuple[str, ...] = ("/", "/health")) -> None:
    """LitServe answers ``/`` and ``/health`` with untyped text while FastAPI documents JSON:
    wrap them so they answer ``{"status": "<text>"}`` (same status code) and the spec holds."""
    for route in list(app.router.routes):
        if getattr(route, "path", None) in paths and "GET" in getattr(route, "methods", ()):
            app.router.routes.remove(route)
            app.add_api_route(route.path, _as_json(route.endpoint), methods=["GET"])


def _as_json(endpoint):
    async def reply(request: Request) -> JSONResponse:
        answer = await endpoint(request)
        return JSONResponse({"status": answer.body.decode()}, status_code=answer.status_code)

    return reply


def document_predict(app, path: str = "/predict") -> None:
    """Describe the request body LitServe cannot infer from ``decode_request(request: Request)``."""
    from fastapi.openapi.utils import get_openapi

    def openapi():
        if app.openapi_schema is None:
            schema = get_openapi(
                title="polypseg",
                version=__import__("polypseg").__version__,
                description=f"Polyp segmentation API. {NOTICE}",
                routes=app.routes,
            )
            operation = schema["paths"][path]["post"]
            operation["requestBody"] = PREDICT_REQUEST_BODY
            operation["responses"] = PREDICT_RESPONSES
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi


def build_server(
    model: str | None = None,
    max_batch_size: int = 1,
    batch_timeout: float = 0.01,
    workers: int = 1,
    threads: int | None = None,
    max_upload_mb: int = 20,
) -> ls.LitServer:
    path = locate_onnx(model, use_default=True)  # a registry model is downloaded once, here
    predictor = OnnxPredictor(path, threads=1)
    api = PolypSegAPI(
        path,
        threads,
        max_batch_size=max_batch_size,
        batch_timeout=batch_timeout if max_batch_size > 1 else 0.0,
    )
    server = ls.LitServer(
        api,
        accelerator="cpu",
        workers_per_device=workers,
        model_metadata={**predictor.metadata, "notice": NOTICE, "model_file": path.name},
        max_payload_size=max_upload_mb * 1024 * 1024,
        timeout=30,
        middlewares=[(RequestGuard, {"max_bytes": max_upload_mb * 1024 * 1024})],
    )
    json_replies(server.app)
    document_predict(server.app)
    return server


def _graceful(signum, frame):
    raise KeyboardInterrupt


def _forked_child() -> None:
    """In LitServe's forked processes (HTTP servers, queue manager): default SIGTERM (uvicorn
    re-raises it after its graceful stop; our handler would print a KeyboardInterrupt traceback),
    and death with the parent."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent()


def serve(
    onnx: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_batch_size: int = 1,
    batch_timeout: float = 0.01,
    workers: int = 1,
    threads: int | None = None,
    max_upload_mb: int = 20,
) -> None:
    """Serve the ONNX model ``onnx`` (default: the shipped one) over HTTP (loopback by default;
    pass --host 0.0.0.0 to expose it)."""
    os.environ.setdefault("LITSERVE_DISABLE_TELEMETRY", "1")
    signal.signal(signal.SIGTERM, _graceful)  # `kill PID` shuts workers down too, like Ctrl-C
    os.register_at_fork(after_in_child=_forked_child)
    server = build_server(onnx, max_batch_size, batch_timeout, workers, threads, max_upload_mb)
    with contextlib.suppress(KeyboardInterrupt):  # a clean stop (Ctrl-C, SIGTERM) is no error
        server.run(host=host, port=port, generate_client_file=False, log_level="warning")
