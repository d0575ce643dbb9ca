"""``stn-gtsrb serve``: the API through FastAPI's test client, the command as a real process on 127.0.0.1,
and the page in headless Chromium (skipped without it, except where ``$STN_GTSRB_REQUIRE_BROWSER`` is set)."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import io
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cli_helpers import CLI, run_cli
from conftest import REAL
from stn_gtsrb import DataLocation, data
from stn_gtsrb.checkpoints import load_pretrained, load_trained, pretrained_path
from stn_gtsrb.geometry import OUTLINE_SAMPLES
from stn_gtsrb.geometry import outline as outline_points
from stn_gtsrb.inference import Distortion
from stn_gtsrb.predictor import PRETRAINED, load_predictor
from stn_gtsrb.robustness import content_thetas, resample
from stn_gtsrb.visualize import corners, transformer_views

fastapi = pytest.importorskip("fastapi", reason="the serve extra is not installed")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Starlette's note on the httpx its test client uses
    from fastapi.testclient import TestClient

import uvicorn  # noqa: E402

from stn_gtsrb.serve import create_app, listening_socket  # noqa: E402

SCREENSHOT_ENV = "STN_GTSRB_SCREENSHOT"  # where the browser test also saves its screenshot (docs/serve.png)
BOUNDARY = "stn-gtsrb-test"
REAL_TEST_IMAGE = "GTSRB/Final_Test/Images/00008.ppm"  # a road-works sign, shown when the real archives are there


def png_bytes(image: Image.Image, format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def decoded(url: str) -> Image.Image:
    assert url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


@pytest.fixture(scope="module")
def served():
    return load_predictor(PRETRAINED)


@pytest.fixture(scope="module")
def sign(official) -> bytes:
    """A synthetic test image, 40x44 pixels (resized by the server), as PNG."""
    image = Image.fromarray(official["test"].images[7].permute(1, 2, 0).numpy()).resize((40, 44))
    return png_bytes(image)


@pytest.fixture(scope="module")
def client(served, official):
    with TestClient(create_app(served, official["test"], max_upload_bytes=4 * 2**20, max_pixels=10**6)) as client:
        yield client


def post(client, image: bytes, query: str = "", name: str = "image"):
    return client.post(f"/api/predict{query}", files={name: ("sign.png", image, "image/png")})


# ---------------------------------------------------------------- the API

def test_the_answer_is_predicts_with_the_regions_plot_draws(client, sign, tmp_path):
    (tmp_path / "sign.png").write_bytes(sign)
    expected = json.loads(run_cli("predict", str(tmp_path / "sign.png"), "--json", "--device", "cpu").stdout)[0]
    answer = post(client, sign).json()
    assert [t["class"] for t in answer["top"]] == [t["class"] for t in expected["top"]]
    assert [t["probability"] for t in answer["top"]] == pytest.approx([t["probability"] for t in expected["top"]])
    assert answer["top"][0]["name"] == expected["top"][0]["name"] and answer["image_size"] == 32

    model, _, normalizer = load_pretrained()
    image = torch.from_numpy(data.decode_resized(tmp_path / "sign.png", 32).copy()).permute(2, 0, 1)
    _, regions = transformer_views(model, image[None], normalizer)
    assert [t["position"] for t in answer["transformers"]] == sorted(regions) == [2]
    (entry,) = answer["transformers"]
    assert torch.tensor(entry["region"]) == pytest.approx(regions[2].matrix[0], abs=1e-5)
    assert torch.tensor(entry["corners"]) == pytest.approx(corners(regions[2].matrix, 32)[0], abs=1e-4)
    outline = torch.tensor(entry["outline"])  # the frame's border: corners every OUTLINE_SAMPLES points
    assert outline.shape == (4 * OUTLINE_SAMPLES, 2)
    assert outline[::OUTLINE_SAMPLES] == pytest.approx(torch.tensor(entry["corners"]), abs=1e-4)
    assert entry["colour"] == "#ffffff" and len(entry["theta"]) == 2 and "view" not in entry and "input" not in answer


def test_views_are_png_data_urls_and_the_distortion_is_robustness_s(client, sign):
    plain = post(client, sign, "?view=1").json()
    turned = post(client, sign, "?view=1&rotation=40&scale=0.8&shift_x=0.1&shift_y=-0.05&top_k=3").json()
    assert turned["distortion"] == {"rotation": 40, "scale": 0.8, "shift_x": 0.1, "shift_y": -0.05}
    assert len(turned["top"]) == 3
    for answer in (plain, turned):
        assert decoded(answer["input"]).size == (32, 32)
        assert decoded(answer["transformers"][0]["view"]).size == (32, 32)
    original = torch.from_numpy(data.decode_resized(io.BytesIO(sign), 32).copy()).permute(2, 0, 1)
    assert torch.equal(torch.from_numpy(np.array(decoded(plain["input"]))).permute(2, 0, 1),
                       original)
    one = torch.ones(1)
    expected = resample(original[None], content_thetas(one * 40, one * 0.8, one * (0.1**2 + 0.05**2) ** 0.5,
                                                       one * torch.atan2(torch.tensor(-0.05), torch.tensor(0.1))))
    shown = torch.from_numpy(np.array(decoded(turned["input"]))).permute(2, 0, 1)
    assert (shown.int() - expected[0].int()).abs().max() <= 1
    assert torch.equal(Distortion(40, 0.8, 0.1, -0.05).apply(original[None])[0], shown)
    assert plain["top"][0]["probability"] != turned["top"][0]["probability"]
    assert plain["transformers"][0]["corners"] != turned["transformers"][0]["corners"]
    assert plain["transformers"][0]["view"] != turned["transformers"][0]["view"]


def test_model_health_and_samples(client, served, official):
    info = client.get("/api/model").json()
    model, cfg, _ = load_pretrained()
    assert info["parameters"] == sum(p.numel() for p in model.parameters())
    assert info["config"] == cfg.to_dict() and info["transformers"] == [2] and info["image_size"] == 32
    assert info["accuracy"]["test"] == pytest.approx(json.loads(pretrained_path().with_suffix(".json").read_text())
                                                     ["test_acc"])
    assert info["sample_images"] == len(official["test"])
    assert client.get("/healthz").json() == {"status": "ok"}
    sample = client.get("/api/sample").json()
    picture = torch.from_numpy(np.array(decoded(sample["image"]))).permute(2, 0, 1)
    assert torch.equal(picture, official["test"].images[sample["index"]])
    assert sample["class"] == int(official["test"].labels[sample["index"]])
    with TestClient(create_app(served)) as bare:
        missing = bare.get("/api/sample")
        assert missing.status_code == 404 and "data prepare" in missing.json()["error"]
        assert bare.get("/api/model").json()["sample_images"] == 0
    assert client.get("/").text.startswith("<!doctype html>") and client.get("/static/app.js").status_code == 200
    assert "/api/predict" in client.get("/openapi.json").json()["paths"]


def test_a_cache_is_read_never_built(shared_dir, prepared, tmp_path):
    assert data.cached_tensors(32, DataLocation(tmp_path / "empty", str(shared_dir))) is None
    assert not (tmp_path / "empty").exists()
    assert len(data.cached_tensors(32, DataLocation(prepared, str(shared_dir)))["test"]) > 0


def patched_png(width: int, height: int) -> bytes:
    """A small PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's shape)."""
    raw = png_bytes(Image.new("L", (1, 1)))
    header = b"IHDR" + struct.pack(">II", width, height) + raw[24:29]
    return raw[:8] + struct.pack(">I", 13) + header + struct.pack(">I", zlib.crc32(header)) + raw[33:]


def jpeg_bytes() -> bytes:
    return png_bytes(Image.effect_noise((64, 64), 60).convert("RGB"), "JPEG")


BAD_UPLOADS = [  # (files or raw body, query, status, words in the message)
    ({"image": ("x.png", b"hello, not an image", "image/png")}, "", 400, "format pillow reads"),
    ({"image": ("x.png", b"", "image/png")}, "", 400, "empty"),
    ({"image": ("x.jpg", jpeg_bytes()[:600], "image/jpeg")}, "", 400, "truncated"),  # in its tables
    ({"image": ("x.jpg", jpeg_bytes()[:-2000], "image/jpeg")}, "", 400, "truncated"),  # in its scan data
    ({"photo": ("x.png", png_bytes(Image.new("RGB", (8, 8))), "image/png")}, "", 400, "'image'"),
    (b"", "", 400, "empty"),
    (png_bytes(Image.new("RGB", (8, 8))), "", 400, "multipart"),
    ({"image": ("x.png", patched_png(2000, 2000), "image/png")}, "", 413, "pixels"),  # over this server's 1 Mpx
    ({"image": ("x.png", patched_png(100_000, 100_000), "image/png")}, "", 413, "pixels"),  # over Pillow's own limit
    ({"image": ("x.bin", os.urandom(4 * 2**20), "image/png")}, "", 413, "limit"),
    ({"image": ("x.png", png_bytes(Image.new("RGB", (8, 8))), "image/png")}, "?rotation=abc", 422, "rotation"),
    ({"image": ("x.png", png_bytes(Image.new("RGB", (8, 8))), "image/png")}, "?rotation=500", 422, "180"),
    ({"image": ("x.png", png_bytes(Image.new("RGB", (8, 8))), "image/png")}, "?scale=0", 422, "scale"),
    ({"image": ("x.png", png_bytes(Image.new("RGB", (8, 8))), "image/png")}, "?shift_x=nan", 422, "finite"),
    ({"image": ("x.png", png_bytes(Image.new("RGB", (8, 8))), "image/png")}, "?top_k=44", 422, "top_k"),
    ({"image": ("x.png", png_bytes(Image.new("RGB", (8, 8))), "image/png")}, "?view=maybe", 422, "view"),
]


@pytest.mark.parametrize("upload, query, status, words", BAD_UPLOADS)
def test_bad_input_gets_a_one_line_json_error_and_the_server_goes_on(client, sign, upload, query, status, words):
    if isinstance(upload, dict):
        response = client.post(f"/api/predict{query}", files=upload)
    else:
        response = client.post(f"/api/predict{query}", content=upload, headers={"content-type": "image/png"})
    message = response.json()["error"]
    assert response.status_code == status and words in message.lower() and "\n" not in message, message
    assert post(client, sign).status_code == 200


def test_unknown_routes_and_methods_are_json_errors(client):
    for response, status in ((client.get("/api/nothing"), 404), (client.get("/static/../serve.py"), 404),
                             (client.get("/api/predict"), 405), (client.delete("/api/model"), 405)):
        assert response.status_code == status and response.json()["error"].count("\n") == 0
    assert client.get("/api/nothing").json() == {"error": "no such route: GET /api/nothing"}


def test_an_upload_over_the_form_parser_s_spooling_threshold_is_answered(client):
    """A 3 MB upload: Starlette's form parser spools a file part over 1 MB to a temporary file."""
    noise = png_bytes(Image.effect_noise((1000, 1000), 80).convert("RGB"))
    assert len(noise) > 2**21
    assert client.post("/api/predict", files={"image": ("n.png", noise, "image/png")}).status_code == 200


def test_concurrent_requests_share_forward_passes(served, sign):
    """Requests sent together get the answers they get one by one (micro-batched or not)."""
    with TestClient(create_app(served, max_batch=8)) as batched, TestClient(create_app(served, max_batch=1)) as one:
        queries = [f"?rotation={angle}" for angle in range(-40, 41, 10)]
        alone = [post(one, sign, q).json() for q in queries]
        with concurrent.futures.ThreadPoolExecutor(len(queries)) as pool:
            together = list(pool.map(lambda q: post(batched, sign, q).json(), queries))
    for a, b in zip(alone, together, strict=True):
        assert [t["class"] for t in a["top"]] == [t["class"] for t in b["top"]]
        assert [t["probability"] for t in a["top"]] == pytest.approx([t["probability"] for t in b["top"]], abs=1e-5)
        assert torch.tensor(a["transformers"][0]["corners"]) == pytest.approx(
            torch.tensor(b["transformers"][0]["corners"]), abs=1e-4)


def slowed(served, seconds: float):
    """``served`` with each forward pass ``seconds`` longer."""
    def trace(images):
        time.sleep(seconds)
        return served.tracer(images)

    return dataclasses.replace(served, tracer=trace)


def test_a_stopped_batcher_turns_healthz_red_and_requests_get_503_not_a_hang(served, sign):
    with TestClient(create_app(served)) as client:
        assert client.get("/healthz").status_code == 200 and post(client, sign).status_code == 200
        client.portal.call(client.app.state.batcher.task.cancel)  # the batcher dies
        health = client.get("/healthz")
        assert health.status_code == 503 and health.json() == {"error": "the batcher stopped (cancelled)"}
        started = time.monotonic()
        answer = post(client, sign)
        assert answer.status_code == 503 and answer.json() == {"error": "the batcher stopped (cancelled)"}
        assert time.monotonic() - started < 5


def test_a_slow_model_or_a_full_queue_gets_503_in_bounded_time(served, sign):
    with TestClient(create_app(slowed(served, 1.0), timeout=0.2)) as client:
        started = time.monotonic()
        answer = post(client, sign)
        assert answer.status_code == 503 and answer.json() == {"error": "the model did not answer within 0.2 s"}
        assert time.monotonic() - started < 1.0
    with TestClient(create_app(slowed(served, 0.5), max_batch=1, max_queue=1)) as client:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: post(client, sign), range(6)))
        codes = sorted(a.status_code for a in answers)
        assert codes[0] == 200 and codes[-1] == 503  # every request answered: some served, the rest refused
        busy = [a.json()["error"] for a in answers if a.status_code == 503]
        assert set(busy) == {"the server is busy: 1 images are already waiting"}


def test_requests_beyond_the_bound_in_progress_get_503_at_once(served, sign):
    with TestClient(create_app(slowed(served, 0.5), max_active=2)) as client:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: post(client, sign), range(6)))
        assert post(client, sign).status_code == 200  # the slots are free again
    codes = sorted(a.status_code for a in answers)
    assert codes[0] == 200 and codes[-1] == 503
    assert {a.json()["error"] for a in answers if a.status_code == 503} == {
        "the server is busy: 2 requests are already in progress"}


@contextlib.contextmanager
def running(app):
    """``app`` served by uvicorn on a free port of 127.0.0.1, in a thread: yields the port and the thread."""
    sock = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    app.state.server = server  # as serve.run does
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield sock.getsockname()[1], thread
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def request_bytes(body: bytes, length: int | None = None) -> bytes:
    """A POST of ``body`` to /api/predict as multipart (``length``: the Content-Length it claims)."""
    head = (f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(body) if length is None else length}\r\n\r\n")
    return head.encode() + body


def multipart(image: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"s.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()


async def answer(port: int, data: bytes) -> tuple[int, dict]:
    """Send ``data`` on a connection of its own; the answer's status and JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        return status, json.loads(await reader.read())
    finally:
        writer.close()


def test_a_body_that_never_ends_gets_408_and_idle_connections_block_nobody(served, sign):
    async def scenario(port: int):
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(100)]  # never say a word
        started = time.monotonic()
        slow = await answer(port, request_bytes(multipart(sign)[:50], length=len(multipart(sign))))
        waited = time.monotonic() - started
        normal = await answer(port, request_bytes(multipart(sign)))
        for _, writer in idle:
            writer.close()
        return slow, waited, normal

    with running(create_app(served, timeout=0.5)) as (port, _):
        (status, body), waited, (normal_status, _) = asyncio.run(scenario(port))
    assert status == 408 and body == {"error": "the upload did not arrive within 0.5 s"} and waited < 5
    assert normal_status == 200


def test_a_server_whose_batcher_dies_stops_and_says_why(served, sign):
    app = create_app(served)
    with running(app) as (port, thread):
        assert asyncio.run(answer(port, request_bytes(multipart(sign))))[0] == 200
        task = app.state.batcher.task
        task.get_loop().call_soon_threadsafe(task.cancel)  # the batcher dies
        thread.join(timeout=10)
        assert not thread.is_alive() and app.state.died == "the batcher stopped (cancelled)"


def test_500_concurrent_connections_all_get_an_answer_within_a_minute(sign):
    """The command as a real process on 127.0.0.1: every connection is answered, 200 or a 503 JSON refusal."""
    async def hammer(port: int) -> list[tuple[int, dict]]:
        data = request_bytes(multipart(sign))
        return await asyncio.wait_for(asyncio.gather(*(answer(port, data) for _ in range(500))), 60)

    process, url = start("--pretrained", "--max-requests", "64")
    try:
        started = time.monotonic()
        answers = asyncio.run(hammer(int(url.rstrip("/").rsplit(":", 1)[1])))
        elapsed = time.monotonic() - started
        with urllib.request.urlopen(url + "healthz", timeout=30) as response:
            assert json.load(response) == {"status": "ok"}
        stop(process, signal.SIGTERM)
    finally:
        process.kill()
    codes = [status for status, _ in answers]
    assert len(answers) == 500 and set(codes) <= {200, 503} and codes.count(200) >= 64, sorted(set(codes))
    assert all("top" in body for status, body in answers if status == 200)
    assert {body["error"].split(":")[0] for status, body in answers if status == 503} <= {"the server is busy"}
    assert elapsed < 60


def test_a_phone_photo_is_read_as_it_is_shown(client, official):
    """A JPEG stored turned, with EXIF orientation 6 (turn 90° clockwise to show), reads as the upright one."""
    upright = Image.fromarray(official["test"].images[7].permute(1, 2, 0).numpy()).resize((64, 64))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    photo, plain = io.BytesIO(), io.BytesIO()
    stored.save(photo, format="JPEG", quality=95, exif=exif)
    upright.save(plain, format="JPEG", quality=95)
    turned = post(client, photo.getvalue()).json()["top"][0]["class"]
    assert turned == post(client, plain.getvalue()).json()["top"][0]["class"]


def test_the_page_has_an_icon(client):
    icon = client.get("/favicon.ico")
    assert icon.status_code == 200 and icon.headers["content-type"].startswith("image/svg+xml")
    assert '<link rel="icon" href="static/favicon.svg"' in client.get("/").text


def test_an_onnx_model_is_served_with_its_transformers(served, sign, tmp_path):
    pytest.importorskip("onnxruntime")
    from stn_gtsrb.onnx_export import export_onnx

    export_onnx(*load_pretrained(), tmp_path / "shipped.onnx")
    onnx_served = load_predictor(tmp_path / "shipped.onnx")
    with TestClient(create_app(onnx_served)) as onnx_client, TestClient(create_app(served)) as torch_client:
        got, want = post(onnx_client, sign, "?rotation=25").json(), post(torch_client, sign, "?rotation=25").json()
        info = onnx_client.get("/api/model").json()
    assert [t["class"] for t in got["top"]] == [t["class"] for t in want["top"]]
    assert torch.tensor(got["transformers"][0]["corners"]) == pytest.approx(
        torch.tensor(want["transformers"][0]["corners"]), abs=1e-3)
    assert info["kind"] == "onnx" and info["accuracy"] == {} and info["parameters"] > 0


@pytest.mark.parametrize("family", ["projective", "tps"])
def test_projective_and_spline_models_are_served_with_plot_s_regions(family_runs, family, sign):
    served = load_predictor(family_runs / family)
    with TestClient(create_app(served)) as client:
        answer = post(client, sign, "?view=1").json()
    model, _, normalizer = load_trained(family_runs / family)
    image = torch.from_numpy(data.decode_resized(io.BytesIO(sign), 32).copy()).permute(2, 0, 1)
    _, regions = transformer_views(model, image[None], normalizer)
    assert [t["position"] for t in answer["transformers"]] == sorted(regions) == [1, 2]
    for entry, region in zip(answer["transformers"], (regions[1], regions[2]), strict=True):
        outline = region.points(outline_points(OUTLINE_SAMPLES))[0]
        assert torch.tensor(entry["outline"]) == pytest.approx((outline + 1) * 16, abs=1e-4)
        assert decoded(entry["view"]).size == (32, 32)
        if family == "tps":  # a spline does not compose into a matrix
            assert entry["region"] is None and torch.tensor(entry["theta"]).shape == (9, 2)
        else:
            assert torch.tensor(entry["region"]) == pytest.approx(region.matrix[0], abs=1e-5)
    if family == "projective":  # a chain of projective maps keeps the frame's sides straight
        side = torch.tensor(answer["transformers"][1]["outline"])[:OUTLINE_SAMPLES + 1]  # the top, corner to corner
        (dx, dy), (px, py) = side[-1] - side[0], (side - side[0]).T
        assert ((px * dy - py * dx).abs() / torch.hypot(dx, dy)).max().item() < 1e-3  # distance to the chord


# ---------------------------------------------------------------- the command

def start(*args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """``stn-gtsrb serve ARGS --port 0`` in a process of its own, and its URL once it answers /healthz."""
    process = subprocess.Popen([*CLI, "serve", *args, "--port", "0"], stderr=subprocess.PIPE, text=True,
                               stdout=subprocess.DEVNULL, env={**os.environ, **(env or {})})
    lines = []
    for line in process.stderr:
        lines.append(line)
        found = re.search(r"serving on (http://\S+/)", line)
        if found:
            url = found.group(1).replace("[::]", "127.0.0.1").replace("0.0.0.0", "127.0.0.1")
            break
    else:
        raise AssertionError(f"the server did not start: {''.join(lines)}")
    with urllib.request.urlopen(url + "healthz", timeout=30) as response:
        assert json.load(response) == {"status": "ok"}
    process.early_lines = lines
    return process, url


def stop(process: subprocess.Popen, sig: int) -> str:
    process.send_signal(sig)
    rest = process.stderr.read()
    assert process.wait(timeout=30) == 0, rest
    return "".join(process.early_lines) + rest


@pytest.mark.parametrize("sig, host", [(signal.SIGTERM, "127.0.0.1"), (signal.SIGINT, "0.0.0.0")])
def test_the_server_stops_cleanly_on_sigterm_and_ctrl_c(sig, host):
    process, url = start("--pretrained", "--host", host)
    try:
        request = urllib.request.Request(url + "api/predict", data=b"", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 400
        output = stop(process, sig)
    finally:
        process.kill()
    assert "Traceback" not in output and "server stopped" in output
    assert ("warning: listening on all interfaces" in output) == (host == "0.0.0.0")


def test_command_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("STN_GTSRB_DATA", str(tmp_path / "no-cache"))  # as on a fresh machine, whatever this one holds
    monkeypatch.delenv("STN_GTSRB_SOURCE", raising=False)
    result = run_cli("serve", "-m", str(tmp_path / "missing.pt"))
    assert result.returncode == 2
    assert result.stderr.strip() == f"stn-gtsrb: error: checkpoint {tmp_path}/missing.pt not found"
    assert run_cli("serve", "--max-upload-mb", "0").stderr.strip() == ("stn-gtsrb: error: --max-upload-mb must be "
                                                                       "positive, got 0.0")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = run_cli("serve", "--port", str(taken.getsockname()[1]))
    assert run_cli("serve", "--port", "70000").stderr == "stn-gtsrb: error: --port must lie in 0 to 65535, got 70000\n"
    assert run_cli("serve", "--port", "-1").stderr == "stn-gtsrb: error: --port must lie in 0 to 65535, got -1\n"
    note, error = result.stderr.splitlines()
    assert note == "stn-gtsrb: note: no prepared data cache, so no random test images ('stn-gtsrb data prepare')"
    assert result.returncode == 2 and error.startswith("stn-gtsrb: error: cannot listen on 127.0.0.1:")


def test_without_the_serve_extra_the_command_names_it(monkeypatch):
    import stn_gtsrb

    monkeypatch.delattr(stn_gtsrb, "serve")
    monkeypatch.delitem(sys.modules, "stn_gtsrb.serve")
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if FastAPI were not installed
    result = run_cli("serve")
    assert result.returncode == 2 and result.stderr == ("stn-gtsrb: error: serve needs fastapi: "
                                                        "pip install 'stn-gtsrb[serve]'\n")


# ---------------------------------------------------------------- the page, in a real browser

def sign_file(folder: Path, official) -> Path:
    """A real test sign when the real archives are there, else a synthetic one, as a file."""
    path = folder / "sign.png"
    if (REAL / "GTSRB_Final_Test_Images.zip").exists():
        with zipfile.ZipFile(REAL / "GTSRB_Final_Test_Images.zip") as archive:
            path.write_bytes(png_bytes(Image.open(io.BytesIO(archive.read(REAL_TEST_IMAGE)))))
    else:
        path.write_bytes(png_bytes(Image.fromarray(official["test"].images[7].permute(1, 2, 0).numpy())))
    return path


def top_class_at(url: str, image: bytes, rotation: float) -> int:
    """The top class the server at ``url`` answers for ``image`` turned by ``rotation`` degrees."""
    request = urllib.request.Request(f"{url}api/predict?rotation={rotation}", data=multipart(image), method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["top"][0]["class"]


def test_the_page_in_headless_chromium(browser, data_env, official, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    image = sign_file(tmp_path, official)
    expected = json.loads(run_cli("predict", str(image), "--json", "--device", "cpu").stdout)[0]["top"][0]
    process, url = start("--pretrained")
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: "parameters" in b.find_element(By.ID, "model-info").text)
        assert browser.find_element(By.ID, "sample").is_displayed()  # the synthetic cache is prepared
        browser.find_element(By.ID, "file").send_keys(str(image))
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-answered"))
        first = browser.find_element(By.CSS_SELECTOR, "#top li:first-child")
        assert int(first.get_attribute("data-class")) == expected["class"] and expected["name"] in first.text
        region = browser.find_element(By.CSS_SELECTOR, "#regions polygon").get_attribute("points")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#views img")) == 1

        slider = browser.find_element(By.ID, "rotation")
        slider.send_keys(*[Keys.ARROW_RIGHT] * 30)
        wait.until(lambda b: b.find_element(By.ID, "rotation-value").text == "30°")
        wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#regions polygon").get_attribute("points") != region)
        time.sleep(0.5)  # the last answer drawn
        assert not browser.find_element(By.ID, "error").is_displayed()
        origins = browser.execute_script(
            "return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
        assert set(origins) <= {url.rstrip("/"), "null"}  # nothing fetched from elsewhere (data: URLs are 'null')
        shot = Path(os.environ.get(SCREENSHOT_ENV) or tmp_path / "serve.png")
        assert browser.save_screenshot(str(shot)) and Image.open(shot).size[0] > 0

        # sliders moved faster than the answers come: each new request aborts the one it supersedes, and the
        # page ends on the answer to the last position
        aborted = browser.execute_async_script(
            "const done = arguments[arguments.length - 1]; const sent = []; const fetch0 = window.fetch;"
            "window.fetch = (url, options) => { sent.push(options.signal); return fetch0(url, options); };"
            "const slider = document.getElementById('rotation');"
            "(async () => { for (let angle = -40; angle <= 40; angle += 8) { slider.value = angle;"
            "slider.dispatchEvent(new Event('input')); await new Promise(r => setTimeout(r, 45)); }"
            "await new Promise(r => setTimeout(r, 3000)); window.fetch = fetch0;"
            "done([sent.length, sent.filter(s => s.aborted).length]); })();")
        assert aborted[0] >= 2 and aborted[1] >= 1, aborted  # several sent, the superseded ones aborted
        assert browser.find_element(By.ID, "rotation-value").text == "40°"
        last = browser.find_element(By.CSS_SELECTOR, "#top li:first-child").get_attribute("data-class")
        assert int(last) == top_class_at(url, image.read_bytes(), 40)
        assert not browser.find_element(By.ID, "error").is_displayed()
        stop(process, signal.SIGTERM)
    finally:
        process.kill()
