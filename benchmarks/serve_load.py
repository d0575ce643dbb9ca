"""Load on ``stn-gtsrb serve``: N concurrent clients for a bounded time, on 127.0.0.1 only.

    python benchmarks/serve_load.py --clients 16 --seconds 30 --max-batch 1,16 > benchmarks/serve_load-CPU.log
    python benchmarks/serve_load.py --clients 16 --seconds 30 --abusive > benchmarks/serve_load-abusive-CPU.log

For each ``--max-batch`` value, starts ``stn-gtsrb serve`` (the shipped model
unless ``--model``) on a free port of 127.0.0.1 as a process of its own, waits
for ``/healthz``, sends ``--warmup`` seconds of requests that are not counted,
then runs ``--clients`` threads for ``--seconds``, each with its own keep-alive
connection, posting the same image to ``/api/predict`` (no ``view``) as fast as
the answers come. It reports requests/s, p50 and p99 latency, errors (answers
other than 200 and failed connections) and the server's resident memory
(VmRSS, from /proc) at the start of the measured run and at its end.

``--abusive`` adds, during the measured run, what a hostile or broken client does, and reports how the
server answered each kind beside what the well-behaved clients got:

* ``--idle`` connections opened before the run and held open without a byte sent;
* an oversized body (the server's upload limit plus 1 MB) posted every half second: 413 expected;
* every ``--burst-every`` seconds, ``--burst`` connections at once (twice serve's ``--max-requests``
  by default), each posting the image: every one should be answered, 200 or 503 JSON, in bounded time.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import io
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import threading
import time

import torch
from PIL import Image, ImageDraw

from stn_gtsrb.inference import MAX_ACTIVE, MAX_UPLOAD_MB
from stn_gtsrb.runtime import device_name

BOUNDARY = "stn-gtsrb-load"


def default_image() -> bytes:
    """A drawn 64x64 warning sign (red triangle on grey), as PNG: the model does the same work for any image."""
    image = Image.new("RGB", (64, 64), (120, 130, 120))
    draw = ImageDraw.Draw(image)
    draw.polygon([(32, 6), (60, 56), (4, 56)], fill=(200, 30, 30))
    draw.polygon([(32, 20), (49, 50), (15, 50)], fill=(240, 240, 240))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(image: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"sign.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + image + f"\r\n--{BOUNDARY}--\r\n".encode()


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid`` in MB (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1)) / 1024


def start_server(model: str | None, max_batch: int, threads: int | None) -> tuple[subprocess.Popen, int]:
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    command = [sys.executable, "-m", "stn_gtsrb.cli", "serve", "--host", "127.0.0.1", "--port", "0",
               "--max-batch", str(max_batch), "--device", "cpu", *(["-m", model] if model else ["--pretrained"])]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    for line in process.stderr:
        found = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line)
        if found:
            threading.Thread(target=process.stderr.read, daemon=True).start()  # keep its pipe drained
            return process, int(found.group(1))
    raise SystemExit(f"the server did not start (exit code {process.wait()})")


def client(port: int, body: bytes, until: float, latencies: list, errors: list) -> None:
    """Post ``body`` until time ``until``, recording each answer's latency (s) or error."""
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    while time.perf_counter() < until:
        started = time.perf_counter()
        try:
            connection.request("POST", "/api/predict", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors.append(f"HTTP {response.status}")
        except (OSError, http.client.HTTPException) as error:
            errors.append(type(error).__name__)
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.close()


def load(port: int, body: bytes, clients: int, seconds: float) -> tuple[list[float], list[str], float]:
    latencies, errors = [], []
    until = time.perf_counter() + seconds
    threads = [threading.Thread(target=client, args=(port, body, until, latencies, errors)) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors, time.perf_counter() - started


def post_once(port: int, body: bytes) -> tuple[str, float]:
    """One POST on a connection of its own: its outcome (``HTTP <status>`` or the error's name) and seconds."""
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.request("POST", "/api/predict", body=body,
                           headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})
        response = connection.getresponse()
        response.read()
        outcome = f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as error:
        outcome = type(error).__name__
    finally:
        connection.close()
    return outcome, time.perf_counter() - started


def abuse(port: int, body: bytes, until: float, idle: int, burst: int, burst_every: float) -> dict:
    """The abusive clients until time ``until`` (see the module docstring): per kind, outcome -> count, and
    the slowest answer of a burst."""
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(idle)]
    oversized = multipart(os.urandom((MAX_UPLOAD_MB + 1) * 2**20))
    outcomes = {"oversized": {}, "burst": {}}
    slowest = 0.0

    def count(kind: str, outcome: str) -> None:
        outcomes[kind][outcome] = outcomes[kind].get(outcome, 0) + 1

    def oversize() -> None:
        while time.perf_counter() < until:
            count("oversized", post_once(port, oversized)[0])
            time.sleep(0.5)

    sender = threading.Thread(target=oversize)
    sender.start()
    with concurrent.futures.ThreadPoolExecutor(burst) as pool:
        while time.perf_counter() < until:
            for outcome, seconds in pool.map(lambda _: post_once(port, body), range(burst)):
                count("burst", outcome)
                slowest = max(slowest, seconds)
            time.sleep(max(0.0, min(burst_every, until - time.perf_counter())))
    sender.join()
    for connection in held:
        connection.close()
    return {"idle_connections": idle, "burst_size": burst, **outcomes, "burst_slowest_s": round(slowest, 3)}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default: 16)")
    parser.add_argument("--seconds", type=float, default=30, help="measured seconds (default: 30)")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of uncounted requests first (default: 3)")
    parser.add_argument("--max-batch", default="16", help="comma-separated serve --max-batch values (default: 16)")
    parser.add_argument("--model", default=None, help="serve -m MODEL (default: the shipped model)")
    parser.add_argument("--image", default=None, help="image file to post (default: a drawn warning sign)")
    parser.add_argument("--threads", type=int, default=None, help="the server's OMP_NUM_THREADS (default: unset)")
    parser.add_argument("--abusive", action="store_true", help="add idle, oversized and burst clients (see above)")
    parser.add_argument("--idle", type=int, default=200, help="with --abusive: idle connections (default: 200)")
    parser.add_argument("--burst", type=int, default=2 * MAX_ACTIVE,
                        help="with --abusive: connections per burst (default: %(default)s)")
    parser.add_argument("--burst-every", type=float, default=5.0,
                        help="with --abusive: seconds between bursts (default: 5)")
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--clients must be at least 1, --seconds positive and --warmup not negative")
    if args.idle < 0 or args.burst < 1 or args.burst_every < 0:
        parser.error("--idle must not be negative, --burst must be at least 1 and --burst-every not negative")
    body = multipart(open(args.image, "rb").read() if args.image else default_image())
    threads = args.threads or os.environ.get("OMP_NUM_THREADS")
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs ({device_name(torch.device('cpu'))}), "
          f"torch {torch.__version__}, python {platform.python_version()}")
    print(f"# {args.clients} clients, {args.seconds:g} s measured after {args.warmup:g} s of warm-up, "
          f"model {args.model or 'shipped'}, server OMP_NUM_THREADS={threads}")
    print(f"{'max_batch':>9} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
          f"{'rss start MB':>12} {'rss end MB':>10}")
    for max_batch in (int(value) for value in args.max_batch.split(",")):
        process, port = start_server(args.model, max_batch, args.threads)
        try:
            load(port, body, args.clients, args.warmup)
            rss_start = rss_mb(process.pid)
            abusive = {}
            if args.abusive:
                until = time.perf_counter() + args.seconds
                with concurrent.futures.ThreadPoolExecutor(1) as side:
                    hostile = side.submit(abuse, port, body, until, args.idle, args.burst, args.burst_every)
                    latencies, errors, elapsed = load(port, body, args.clients, args.seconds)
                    abusive = hostile.result()
            else:
                latencies, errors, elapsed = load(port, body, args.clients, args.seconds)
            rss_end = rss_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=60)
        row = {"max_batch": max_batch, "clients": args.clients, "requests": len(latencies),
               "requests_per_s": len(latencies) / elapsed,
               "p50_ms": 1000 * percentile(latencies, 50) if latencies else None,
               "p99_ms": 1000 * percentile(latencies, 99) if latencies else None,
               "errors": len(errors), "error_kinds": sorted(set(errors)), "rss_start_mb": rss_start,
               "rss_end_mb": rss_end, "server_exit_code": process.returncode}
        if abusive:
            row["abusive"] = abusive
        print(f"{max_batch:>9} {row['requests']:>8} {row['requests_per_s']:>7.1f} {row['p50_ms'] or 0:>7.1f} "
              f"{row['p99_ms'] or 0:>7.1f} {row['errors']:>6} {rss_start:>12.1f} {rss_end:>10.1f}")
        if abusive:
            print(f"# abusive: {abusive['idle_connections']} idle connections held; oversized bodies "
                  f"{abusive['oversized']}; bursts of {abusive['burst_size']}: {abusive['burst']}, slowest answer "
                  f"{abusive['burst_slowest_s']} s")
        print(f"# json {json.dumps(row)}")


if __name__ == "__main__":
    main()
