"""Shared fixtures: the offline GTSRB copy, a prepared 32 px cache, a local HTTP server."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

from stn_gtsrb import TrainConfig, data, train

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STN_GTSRB_SHARED", REPO.parent / "shared" / "gtsrb"))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The folder with the three official archives (read-only)."""
    if not (SHARED / "GTSRB_Final_Training_Images.zip").exists():
        pytest.fail(f"GTSRB archives not found in {SHARED}; set STN_GTSRB_SHARED to the folder holding them")
    return SHARED


@pytest.fixture(scope="session")
def prepared(shared_dir, tmp_path_factory) -> Path:
    """A data directory with the 32 px cache built from the shared archives."""
    data_dir = tmp_path_factory.mktemp("data")
    data.prepare(32, data_dir, str(shared_dir), show_progress=False)
    return data_dir


@pytest.fixture(scope="session")
def official(prepared, shared_dir):
    return data.load_tensors(32, prepared, str(shared_dir))


@pytest.fixture
def data_env(prepared, shared_dir, monkeypatch):
    """Point the package's defaults (and CLI subprocesses) at the prepared data."""
    monkeypatch.setenv("STN_GTSRB_DATA", str(prepared))
    monkeypatch.setenv("STN_GTSRB_SOURCE", str(shared_dir))
    return prepared


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, prepared, shared_dir):
    """Two tiny trained runs: with two transformers (and a recorded epoch 1), and without any."""
    root = tmp_path_factory.mktemp("runs")
    common = dict(net="lecun", cnn="4,8,16", n=500, epochs=1, optimizer="adam", lr=0.003, val=True)
    train(TrainConfig(**common, st=True, locnet="4,4,8", locnet2="4,4,4"), root / "st", record_st=4,
          data_dir=prepared, source=str(shared_dir), echo=lambda _: None)
    train(TrainConfig(**common), root / "plain", data_dir=prepared, source=str(shared_dir), echo=lambda _: None)
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
