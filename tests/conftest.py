"""Shared fixtures: synthetic and real GTSRB archives, prepared caches, tiny runs, a local HTTP server.

Most tests use ``shared_dir``, a small synthetic GTSRB in the official layout,
so that the suite passes on a fresh clone. Tests that need the real archives
(official counts, the shipped model's accuracy) take ``real_dir``/``real_env``
and are skipped without them, except where ``$STN_GTSRB_REQUIRE_REAL`` is set.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

from stn_gtsrb import DataLocation, TrainConfig, data, train
from stn_gtsrb.visualize import TrainingRecorder
from synthetic_gtsrb import write_archives

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
REQUIRE_BROWSER_ENV = "STN_GTSRB_REQUIRE_BROWSER"  # set by CI, which installs Chromium and npm: a skip fails there
REAL = Path(os.environ.get("STN_GTSRB_SHARED", REPO.parent / "shared" / "gtsrb"))
REQUIRE_REAL_ENV = "STN_GTSRB_REQUIRE_REAL"  # set by CI, which has the real archives: a skip is a failure there


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """The folder with the three real GTSRB archives (read-only); the test is skipped without them."""
    if not (REAL / "GTSRB_Final_Training_Images.zip").exists():
        reason = f"the real GTSRB archives are not in {REAL} (set STN_GTSRB_SHARED to their folder)"
        if os.environ.get(REQUIRE_REAL_ENV):
            pytest.fail(f"{reason}, and ${REQUIRE_REAL_ENV} says they must be")
        pytest.skip(reason)
    return REAL


@pytest.fixture(scope="session")
def shared_dir(tmp_path_factory) -> Path:
    """A small synthetic GTSRB in the official layout (see synthetic_gtsrb.py), with its SHA256SUMS."""
    return write_archives(tmp_path_factory.mktemp("archives"))


@pytest.fixture(scope="session")
def prepared(shared_dir, tmp_path_factory) -> Path:
    """A data directory with the 32 px cache built from the synthetic archives."""
    data_dir = tmp_path_factory.mktemp("data")
    data.prepare(32, DataLocation(data_dir, str(shared_dir)), show_progress=False)
    return data_dir


@pytest.fixture(scope="session")
def official(prepared, shared_dir):
    return data.load_tensors(32, DataLocation(prepared, str(shared_dir)))


@pytest.fixture(scope="session")
def real_prepared(real_dir, tmp_path_factory) -> Path:
    """A data directory with the 32 px cache built from the real archives."""
    data_dir = tmp_path_factory.mktemp("real-data")
    data.prepare(32, DataLocation(data_dir, str(real_dir)), show_progress=False)
    return data_dir


@pytest.fixture
def data_env(prepared, shared_dir, monkeypatch):
    """Point the package's defaults (and CLI subprocesses) at the prepared synthetic data."""
    monkeypatch.setenv("STN_GTSRB_DATA", str(prepared))
    monkeypatch.setenv("STN_GTSRB_SOURCE", str(shared_dir))
    return prepared


@pytest.fixture
def real_env(real_prepared, real_dir, monkeypatch):
    """Point the package's defaults (and CLI subprocesses) at the prepared real data."""
    monkeypatch.setenv("STN_GTSRB_DATA", str(real_prepared))
    monkeypatch.setenv("STN_GTSRB_SOURCE", str(real_dir))
    return real_prepared


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, prepared, shared_dir):
    """Two tiny trained runs: with two transformers (and a recorded epoch 1), and without any."""
    root = tmp_path_factory.mktemp("runs")
    common = dict(net="lecun", cnn="4,8,16", n=500, epochs=1, optimizer="adam", lr=0.003, val=True)
    st = TrainConfig(**common, st=True, locnet="4,4,8", locnet2="4,4,4")
    recorder = TrainingRecorder.for_run(st, 4, root / "st", echo=lambda _: None)
    train(st, root / "st", callbacks=[recorder], data_dir=prepared, source=str(shared_dir), echo=lambda _: None)
    train(TrainConfig(**common), root / "plain", data_dir=prepared, source=str(shared_dir), echo=lambda _: None)
    return root


@pytest.fixture(scope="session")
def family_runs(tmp_path_factory, prepared, shared_dir):
    """Tiny trained runs with two projective transformers and with two thin-plate splines (3×3 control
    points), each with a recorded epoch 1, named by their family."""
    root = tmp_path_factory.mktemp("family_runs")
    for family in ("projective", "tps"):
        cfg = TrainConfig(net="lecun", cnn="4,8,16", n=500, epochs=1, optimizer="adam", lr=0.003, val=True, st=True,
                          locnet="4,4,8", locnet2="4,4,4", transform=family, tps_grid=3)
        recorder = TrainingRecorder.for_run(cfg, 4, root / family, echo=lambda _: None)
        train(cfg, root / family, callbacks=[recorder], data_dir=prepared, source=str(shared_dir),
              echo=lambda _: None)
    return root


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; ``truncate_once`` names files cut short on their first request."""

    truncate_once: set = set()

    def log_message(self, *args):  # keep test output quiet
        pass

    def copyfile(self, source, outputfile):
        name = Path(self.path).name
        if name in self.truncate_once:
            self.truncate_once.discard(name)
            outputfile.write(source.read(os.fstat(source.fileno()).st_size // 2))
            self.close_connection = True
            return
        shutil.copyfileobj(source, outputfile)


@pytest.fixture
def http_server():
    """``serve(folder, truncate_once=())`` starts a real HTTP server on 127.0.0.1 and returns its URL."""
    servers = []

    def serve(folder: Path, truncate_once=()) -> str:
        handler = type("Handler", (_Handler,), {"truncate_once": set(truncate_once)})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mirror(shared_dir, tmp_path) -> callable:
    """``mirror(with_checksums=True, replace={name: bytes})``: a folder linking the shared archives."""

    def make(with_checksums: bool = True, replace: dict | None = None) -> Path:
        folder = tmp_path / "mirror"
        folder.mkdir(exist_ok=True)
        for name in data.ARCHIVES.values():
            target = folder / name
            if replace and name in replace:
                target.write_bytes(replace[name])
            else:
                target.symlink_to(shared_dir / name)
        if with_checksums:
            shutil.copy(shared_dir / "SHA256SUMS", folder / "SHA256SUMS")
        return folder

    return make


@pytest.fixture
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        reason = f"headless Chromium needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
        if os.environ.get(REQUIRE_BROWSER_ENV):
            pytest.fail(f"{reason}, and ${REQUIRE_BROWSER_ENV} says they must be there")
        pytest.skip(reason)
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1000,760", "--hide-scrollbars"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    yield driver
    driver.quit()
