"""``export --web``: the site's files, its graph against PyTorch (onnxruntime), and the page in headless Chromium with
onnxruntime-web installed from npm into a temporary folder (skipped without npm or Chromium, except where
``$STN_GTSRB_REQUIRE_BROWSER`` is set)."""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image

from cli_helpers import run_cli
from conftest import REAL, REQUIRE_BROWSER_ENV
from stn_gtsrb.inference import Distortion, describe
from stn_gtsrb.predictor import PRETRAINED, load_predictor
from stn_gtsrb.runtime import device_name
from stn_gtsrb.web_export import ORT_CDN, ORT_FILES, ORT_SRI, ORT_VERSION, ort_integrity

TIMING_ENV = "STN_GTSRB_WEB_LOG"  # where the browser test also writes the site's sizes and the page's timing
SCREENSHOT_ENV = "STN_GTSRB_WEB_SCREENSHOT"  # where it saves its screenshot (docs/web.png)
PARITY_IMAGES = 200
REAL_TEST_IMAGE = "GTSRB/Final_Test/Images/00008.ppm"  # a road-works sign, as in the serve page's screenshot


@pytest.fixture(scope="module")
def ort_dist(tmp_path_factory) -> Path:
    """onnxruntime-web ORT_VERSION's dist folder, installed from the npm registry."""
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get(REQUIRE_BROWSER_ENV):
            pytest.fail(f"the page test needs npm, and ${REQUIRE_BROWSER_ENV} says it must be there")
        pytest.skip("the page test needs npm (apt-get install npm)")
    folder = tmp_path_factory.mktemp("ort")
    subprocess.run([npm, "install", "--no-save", "--ignore-scripts", "--no-audit", "--no-fund", "--prefix", str(folder),
                    f"onnxruntime-web@{ORT_VERSION}"], check=True, capture_output=True, timeout=600)
    return folder / "node_modules" / "onnxruntime-web" / "dist"


def site_of(tmp_path: Path, *args: str) -> Path:
    result = run_cli("export", *args, "--web", str(tmp_path / "site"))
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "12 example images" in result.stdout
    return tmp_path / "site"


def test_a_site_holds_the_page_the_model_and_its_examples(tiny_runs, data_env, tmp_path):
    site = site_of(tmp_path, str(tiny_runs / "st"))
    assert {p.name for p in site.iterdir()} == {"index.html", "model.onnx", "model.json", "static", "examples"}
    page = (site / "index.html").read_text()
    assert f'<script src="{ORT_CDN}ort.wasm.min.js" integrity="{ORT_SRI}" crossorigin="anonymous">' in page
    assert "static/local.js" in page and "<!--" not in page and not (site / "static" / "ort").exists()
    record = json.loads((site / "model.json").read_text())
    assert record["positions"] == [1, 2] and len(record["examples"]) == 12 and len(record["classes"]) == 43
    assert all((site / example["file"]).is_file() for example in record["examples"])
    assert record["outputs"] == ["probabilities", "input", "corners1", "outline1", "view1", "corners2", "outline2",
                                 "view2"]

    again = run_cli("export", str(tiny_runs / "st"), "--web", str(site))
    assert again.returncode == 2 and "exists and is not empty: use --overwrite" in again.stderr
    assert run_cli("export", str(tiny_runs / "st"), "--web", str(site), "--overwrite").returncode == 0


@pytest.mark.parametrize("args, message", [
    (["--ort", "nowhere"], "--ort nowhere lacks ort.wasm.min.js"),
    (["--ort", "x", "-o", "m.onnx"], "--ort goes with --web"),
])
def test_bad_web_options_are_one_line_errors(tiny_runs, data_env, tmp_path, args, message):
    if "--web" not in args and "-o" not in args:
        args = [*args, "--web", str(tmp_path / "site")]
    result = run_cli("export", str(tiny_runs / "st"), *args)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_spline_model_is_refused(family_runs, data_env, tmp_path):
    result = run_cli("export", str(family_runs / "tps"), "--web", str(tmp_path / "site"))
    assert result.returncode == 2 and "this model has a tps transformer" in result.stderr
    assert not (tmp_path / "site").exists() and not list(tmp_path.glob(".site*"))


def pytorch_answers(source, images: torch.Tensor, distortion: Distortion) -> list[dict]:
    """What serve answers for uint8 ``images`` under ``distortion``."""
    predictor = load_predictor(source)
    distorted = distortion.apply(images)
    probabilities, thetas = predictor.trace(distorted)
    return [describe(distorted[n], probabilities[n], {p: t[n] for p, t in thetas.items()}, predictor.network,
                     distortion) for n in range(len(images))]


def test_the_graph_answers_as_serve_does(tiny_runs, data_env, official, tmp_path):
    site = site_of(tmp_path, str(tiny_runs / "st"))
    runner = onnxruntime.InferenceSession(site / "model.onnx", providers=["CPUExecutionProvider"])
    names = [output.name for output in runner.get_outputs()]
    images = official["test"].images[:64]
    for distortion in (Distortion(), Distortion(30, 0.8, 0.1, -0.15)):
        feed = {"images": images.float().numpy(),
                "distortion": np.array([[distortion.rotation, distortion.scale, distortion.shift_x,
                                         distortion.shift_y]] * len(images), dtype=np.float32)}
        out = dict(zip(names, runner.run(None, feed), strict=True))
        assert np.abs(out["input"] - distortion.apply(images).numpy()).max() <= 1  # rounding, now and then
        for n, answer in enumerate(pytorch_answers(tiny_runs / "st", images, distortion)):
            assert answer["top"][0]["class"] == out["probabilities"][n].argmax()
            for entry in answer["transformers"]:
                position = entry["position"]
                assert np.abs(np.array(entry["corners"]) - out[f"corners{position}"][n]).max() < 1e-3
                assert np.abs(np.array(entry["outline"]) - out[f"outline{position}"][n]).max() < 1e-3


def test_the_pinned_script_is_the_one_npm_gives(ort_dist):
    assert all((ort_dist / name).is_file() for name in ORT_FILES)
    assert ort_integrity(ort_dist / "ort.wasm.min.js") == ORT_SRI


def test_the_page_in_headless_chromium_answers_as_pytorch(browser, ort_dist, data_env, official, http_server,
                                                          tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    site = site_of(tmp_path, "--pretrained", "--ort", str(ort_dist))
    images = official["test"].images[:PARITY_IMAGES]
    (site / "parity").mkdir()
    for n, image in enumerate(images):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(site / "parity" / f"{n:03d}.png")
    url = http_server(site)
    browser.get(url)
    wait = WebDriverWait(browser, 120)
    wait.until(lambda b: "parameters" in b.find_element(By.ID, "model-info").text)
    browser.set_script_timeout(300)
    answers = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "stnBackend.classifyUrls(arguments[0]).then(all => done(all.map(a => ({top: a.top[0].class, "
        "corners: a.transformers.map(t => t.corners)}))), e => done({error: e.message}));",
        [f"parity/{n:03d}.png" for n in range(PARITY_IMAGES)])
    assert isinstance(answers, list), answers
    expected = pytorch_answers(PRETRAINED, images, Distortion())
    same = sum(a["top"] == e["top"][0]["class"] for a, e in zip(answers, expected, strict=True))
    worst = max(np.abs(np.array(a["corners"]) - np.array([t["corners"] for t in e["transformers"]])).max()
                for a, e in zip(answers, expected, strict=True))
    assert same >= PARITY_IMAGES - 1 and worst <= 0.5, (same, worst)

    timings = browser.execute_async_script(
        "const done = arguments[arguments.length - 1]; (async () => { const times = [];"
        "for (let i = 0; i < 30; i++) { const start = performance.now();"
        "await stnBackend.classifyUrls([arguments[0]]); times.push(performance.now() - start); }"
        "done(times); })();", "parity/000.png")

    # as a person would: a file through the page's input, then the rotation slider
    browser.find_element(By.ID, "file").send_keys(str(site / "parity" / "007.png"))
    wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-answered"))
    first = browser.find_element(By.CSS_SELECTOR, "#top li:first-child")
    assert int(first.get_attribute("data-class")) == expected[7]["top"][0]["class"]
    region = browser.find_element(By.CSS_SELECTOR, "#regions polygon").get_attribute("points")
    browser.find_element(By.ID, "rotation").send_keys(*[Keys.ARROW_RIGHT] * 30)
    wait.until(lambda b: b.find_element(By.CSS_SELECTOR, "#regions polygon").get_attribute("points") != region)
    time.sleep(0.5)  # the last answer drawn
    assert not browser.find_element(By.ID, "error").is_displayed()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#views img")) == 1
    origins = browser.execute_script("return performance.getEntriesByType('resource').map(e => new URL(e.name).origin)")
    assert set(origins) <= {url.rstrip("/"), "null"}  # nothing fetched from elsewhere

    if os.environ.get(SCREENSHOT_ENV):  # for the docs: a real sign when the real archives are there
        if (REAL / "GTSRB_Final_Test_Images.zip").exists():
            with zipfile.ZipFile(REAL / "GTSRB_Final_Test_Images.zip") as archive:
                Image.open(io.BytesIO(archive.read(REAL_TEST_IMAGE))).save(tmp_path / "sign.png")
            browser.find_element(By.ID, "file").send_keys(str(tmp_path / "sign.png"))
            time.sleep(2)  # its answer drawn
        assert browser.save_screenshot(os.environ[SCREENSHOT_ENV])
    if os.environ.get(TIMING_ENV):
        sizes = {path.relative_to(site).as_posix(): path.stat().st_size for path in site.rglob("*")
                 if path.is_file() and "parity" not in path.parts}
        record = {"onnxruntime_web": ORT_VERSION, "parity": {"images": PARITY_IMAGES, "same_class": same,
                                                              "worst_corner_px": worst},
                  "ms_per_image": {"median": statistics.median(timings), "runs": len(timings)},
                  "site_bytes": sum(sizes.values()), "model_bytes": sizes["model.onnx"],
                  "ort_bytes": sum(v for k, v in sizes.items() if k.startswith("static/ort/")),
                  "browser": f"Chromium {browser.capabilities.get('browserVersion')}, headless",
                  "cpu": device_name(torch.device("cpu"))}
        Path(os.environ[TIMING_ENV]).write_text(json.dumps(record, indent=1) + "\n")
