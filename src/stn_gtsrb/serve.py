"""``stn-gtsrb serve``: a local web page and JSON API showing a model and its transformers at work.

Routes (OpenAPI docs at ``/docs``, schema at ``/openapi.json``)::

    GET  /              the page (static/: plain HTML, CSS and JavaScript, nothing fetched from elsewhere)
    POST /api/predict   multipart field ``image``; query top_k, rotation, scale, shift_x, shift_y, view
    GET  /api/model     the model's config, parameter count and recorded accuracy
    GET  /api/sample    a random test image from the prepared data cache (404 without one)
    GET  /healthz       liveness: 200, or 503 once the model's batcher has stopped
    GET  /favicon.ico   the page's icon

FastAPI (on Starlette, served by uvicorn) is the Python ecosystem's usual
choice for a small model server: typed query parameters with range checks and
OpenAPI docs come with it. It is the ``serve`` extra, imported only by this
module, which the CLI imports when ``serve`` runs.

Every error is a JSON object ``{"error": "one line"}`` with a 4xx status:
bodies over ``max_upload_bytes`` (413, checked on Content-Length and while
reading), a body not received within ``timeout`` seconds (408), images of more
than ``max_pixels`` (413), unreadable images or forms (400), bad parameters
(422), unknown routes (404). The body is read into memory, then parsed by
Starlette's public form parser (``Request.form``, one file, few fields), which
spools a file part over 1 MB to an unnamed temporary file, closed once the
image is read; no parameter names a file. An image costs about 3 bytes per
pixel once decoded: the default 50-megapixel limit bounds one at about 150 MB.

Concurrent requests are micro-batched: while the model runs one batch, the
requests that arrive queue up and go through together in the next forward
pass (at most ``max_batch`` at a time; 1 runs them one by one). Nothing waits
without bound: beyond ``max_active`` requests in progress (reading, decoding
or waiting for the model), beyond ``max_queue`` waiting images, after
``timeout`` seconds without the model's answer, or once the batching task has
stopped, a request gets a 503 JSON answer at once, and ``/healthz`` turns 503
with the reason; a server started by :func:`run` then stops, and says why.
Idle connections cost the server a socket each, not a request slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket

import python_multipart  # noqa: F401 - Starlette's form parser needs it; missing, serve names the extra
import torch
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from . import __version__
from .classes import CLASS_NAMES
from .data import GTSRBTensors
from .errors import StnError
from .inference import (
    MAX_ACTIVE,
    MAX_BATCH,
    MAX_PIXELS,
    MAX_UPLOAD_MB,
    ROTATION,
    SCALE,
    SHIFT,
    STATIC,
    Distortion,
    ImageTooLarge,
    describe,
    page,
    png_data_url,
    prepare,
)
from .predictor import Predictor

PAGE = page('<script src="static/server.js"></script>',
            '<a href="docs">API docs</a> · <a href="api/model">model</a> · runs on this machine only')
MAX_QUEUE = 256  # images waiting for the model at most; a request beyond gets 503 at once
TIMEOUT = 30.0  # seconds a request's body may take to arrive (else 408), and it may wait for the model (else 503)
ROUTING_ERRORS = {"Not Found": "no such route", "Method Not Allowed": "method not allowed"}
ALL_INTERFACES = ("0.0.0.0", "::", "")
UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"],
    "properties": {"image": {"type": "string", "format": "binary", "description": "any image Pillow reads"}}}}}}}


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class Busy(Exception):
    """The server cannot take a request now (its queue is full, or the model is not answering): a 503."""


class Admission:
    """At most ``limit`` requests in progress; one beyond is refused with :class:`Busy` at once, never queued
    (the event loop runs one coroutine at a time, so a counter is enough)."""

    def __init__(self, limit: int):
        self.limit, self.active = limit, 0

    @contextlib.contextmanager
    def slot(self):
        if self.active >= self.limit:
            raise Busy(f"the server is busy: {self.limit} requests are already in progress")
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


class Batcher:
    """Runs ``served.trace`` on batches of the images queued while the previous batch ran.

    At most ``max_queue`` images wait; a request beyond that, or one not answered within ``timeout``
    seconds, or any while the batching task has stopped, raises :class:`Busy` instead of waiting.
    """

    def __init__(self, served: Predictor, max_batch: int, max_queue: int = MAX_QUEUE, timeout: float = TIMEOUT):
        self.served, self.max_batch, self.timeout = served, max_batch, timeout
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
        self.task: asyncio.Task | None = None

    def start(self) -> asyncio.Task:
        self.task = asyncio.create_task(self.run())
        return self.task

    @property
    def failure(self) -> str | None:
        """Why the batching task is not running (None while it runs)."""
        if self.task is None:
            return "the batcher has not started"
        if not self.task.done():
            return None
        error = None if self.task.cancelled() else self.task.exception()
        return f"the batcher stopped ({type(error).__name__ if error else 'cancelled'})"

    async def __call__(self, image: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """uint8 ``(3, S, S)`` -> (probabilities ``(43,)``, {position: theta ``(2, 3)``}); Busy if it cannot be."""
        if self.failure:
            raise Busy(self.failure)
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((image, future))
        except asyncio.QueueFull:
            raise Busy(f"the server is busy: {self.queue.maxsize} images are already waiting") from None
        try:
            return await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError:
            raise Busy(self.failure or f"the model did not answer within {self.timeout:g} s") from None

    async def run(self) -> None:
        while True:
            items = [await self.queue.get()]
            while len(items) < self.max_batch and not self.queue.empty():
                items.append(self.queue.get_nowait())
            try:
                probabilities, thetas = await run_in_threadpool(self.served.trace,
                                                                torch.stack([image for image, _ in items]))
            except Exception as failure:  # noqa: BLE001 - handed to each waiting request
                for _, future in items:
                    if not future.done():
                        future.set_exception(failure)
                continue
            for i, (_, future) in enumerate(items):
                if not future.done():  # its client may have gone
                    future.set_result((probabilities[i], {p: theta[i] for p, theta in thetas.items()}))


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, at most ``limit`` bytes (by its Content-Length and as it arrives); else 413."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"the upload is {int(declared):,} bytes, more than the limit of {limit:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPException(413, f"the upload is more than the limit of {limit:,} bytes")
    return bytes(body)


async def read_image_field(request: Request, limit: int, timeout: float) -> bytes:
    """The bytes of the multipart field ``image`` of a body of at most ``limit`` bytes that arrives within
    ``timeout`` seconds; HTTPException otherwise."""
    try:
        body = await asyncio.wait_for(read_body(request, limit), timeout)
    except asyncio.TimeoutError:
        raise HTTPException(408, f"the upload did not arrive within {timeout:g} s") from None
    if not body:
        raise HTTPException(400, "the request body is empty: send an image as the multipart form field 'image'")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise HTTPException(400, "send the image as the multipart form field 'image' (multipart/form-data)")

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:  # a request of its own over the body read, for Starlette's public form parser
        form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    except HTTPException as failure:
        raise HTTPException(400, f"unreadable multipart form: {failure.detail}") from None
    try:
        field = form.get("image")
        if not isinstance(field, UploadFile):
            raise HTTPException(400, "the form has no file field 'image'")
        return await field.read()
    finally:
        await form.close()


def create_app(served: Predictor, samples: GTSRBTensors | None = None, max_upload_bytes: int = MAX_UPLOAD_MB * 2**20,
               max_pixels: int = MAX_PIXELS, max_batch: int = MAX_BATCH, max_queue: int = MAX_QUEUE,
               timeout: float = TIMEOUT, max_active: int = MAX_ACTIVE) -> FastAPI:
    """The web app serving ``served``; ``samples``: test images for ``/api/sample`` (None: none). Its
    batcher is ``app.state.batcher``."""
    size = served.config.image_size
    info = served.info() | {"sample_images": len(samples) if samples is not None else 0}
    batcher = Batcher(served, max_batch, max_queue, timeout)
    admission = Admission(max_active)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        closing = False

        def stopped(_task) -> None:  # the batcher died while serving: stop the server it runs in, if any
            if not closing:
                app.state.died = batcher.failure
                if getattr(app.state, "server", None) is not None:
                    app.state.server.should_exit = True

        task = batcher.start()
        task.add_done_callback(stopped)
        yield
        closing = True
        task.cancel()

    app = FastAPI(title="stn-gtsrb", version=__version__, lifespan=lifespan,
                  description="A traffic-sign classifier and its spatial transformers at work.")
    app.state.batcher = batcher

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, failure: HTTPException) -> JSONResponse:
        message = str(failure.detail)
        if message in ROUTING_ERRORS:  # the framework's own words: say which route
            message = f"{ROUTING_ERRORS[message]}: {request.method} {request.url.path}"
        return error(failure.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, failure: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(map(str, e['loc'][1:])) or e['loc'][0]}: {e['msg']} (got {e.get('input')!r})"
                    for e in failure.errors()]
        return error(422, "; ".join(problems))

    @app.exception_handler(Exception)
    async def server_error(request: Request, failure: Exception) -> JSONResponse:
        return error(500, f"internal error: {type(failure).__name__}")

    @app.exception_handler(Busy)
    async def busy(request: Request, failure: Busy) -> JSONResponse:
        return error(503, str(failure))

    @app.get("/healthz")
    async def healthz():
        """Liveness: 200 while the model's batcher runs, else 503 with the reason."""
        return error(503, batcher.failure) if batcher.failure else {"status": "ok"}

    @app.get("/api/model")
    async def model() -> dict:
        """The model's config, parameter count and recorded accuracy (percent, per split)."""
        return info

    @app.get("/api/sample")
    async def sample() -> dict:
        """A random test image of the prepared data cache, as a PNG data URL with its class."""
        if samples is None:
            raise HTTPException(404, "no prepared data cache: run 'stn-gtsrb data prepare' and restart the server")
        index = random.randrange(len(samples))
        label = int(samples.labels[index])
        return {"index": index, "class": label, "name": CLASS_NAMES[label],
                "image": png_data_url(samples.images[index])}

    @app.post("/api/predict", openapi_extra=UPLOAD_SCHEMA)
    async def predict(request: Request,
                      top_k: int = Query(5, ge=1, le=len(CLASS_NAMES), description="classes listed"),
                      rotation: float = Query(0.0, ge=ROTATION[0], le=ROTATION[1], allow_inf_nan=False,
                                              description="degrees, clockwise"),
                      scale: float = Query(1.0, ge=SCALE[0], le=SCALE[1], allow_inf_nan=False,
                                           description="content size factor"),
                      shift_x: float = Query(0.0, ge=SHIFT[0], le=SHIFT[1], allow_inf_nan=False,
                                             description="fraction of the side, to the right"),
                      shift_y: float = Query(0.0, ge=SHIFT[0], le=SHIFT[1], allow_inf_nan=False,
                                             description="fraction of the side, down"),
                      view: bool = Query(False, description="add the input and each transformer's view as PNGs")):
        """Top classes, and per transformer θ and its sampled region (corners, outline; input pixels), of one image."""
        distortion = Distortion(rotation, scale, shift_x, shift_y)
        with admission.slot():
            data = await read_image_field(request, max_upload_bytes, timeout)
            try:
                image = await run_in_threadpool(prepare, data, size, distortion, max_pixels)
            except ImageTooLarge as failure:
                return error(413, str(failure))
            except StnError as failure:
                return error(400, str(failure))
            probabilities, thetas = await batcher(image)
        return await run_in_threadpool(describe, image, probabilities, thetas, served.network, distortion, top_k,
                                     view)

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def check_port(port: int) -> int:
    """``port`` if it is a TCP port number (0: any free one); else StnError."""
    if not 0 <= port <= 65535:
        raise StnError(f"--port must lie in 0 to 65535, got {port}")
    return port


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (port 0: a free one); StnError with one line if that is impossible."""
    check_port(port)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # connections wait here until the server accepts them
    except OSError as failure:
        raise StnError(f"cannot listen on {host}:{port}: {failure.strerror or failure}") from None
    return sock


def run(app: FastAPI, host: str = "127.0.0.1", port: int = 8000, echo=print) -> None:
    """Serve ``app`` until Ctrl-C or SIGTERM, then stop cleanly (open requests are finished)."""
    sock = listening_socket(host, port)
    if host in ALL_INTERFACES:
        echo(f"stn-gtsrb: warning: listening on all interfaces ({host or '*'}): anyone who can reach this "
             "machine can use the server")
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    echo(f"stn-gtsrb: serving on http://{shown}:{bound_port}/ (Ctrl-C stops)")
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))
    app.state.server = server  # a batcher that dies stops it (create_app)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again: ignore that one
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    if getattr(app.state, "died", None):
        raise StnError(f"{app.state.died}, so the server stopped")
    echo("stn-gtsrb: server stopped")
