"""Load on ``stn-gtsrb serve``: N concurrent clients for a bounded time, on 127.0.0.1 only.

    python benchmarks/serve_load.py --clients 16 --seconds 30 --max-batch 1,16 > benchmarks/serve_load-CPU.log

For each ``--max-batch`` value, starts ``stn-gtsrb serve`` (the shipped model
unless ``--model``) on a free port of 127.0.0.1 as a process of its own, waits
for ``/healthz``, sends ``--warmup`` seconds of requests that are not counted,
then runs ``--clients`` threads for ``--seconds``, each with its own keep-alive
connection, posting the same image to ``/api/predict`` (no ``view``) as fast as
the answers come. It reports requests/s, p50 and p99 latency, errors (answers
other than 200 and failed connections) and the server's resident memory
(VmRSS, from /proc) at the start of the measured run and at its end.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time

import torch
from PIL import Image, ImageDraw

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
    args = parser.parse_args()
    if args.clients < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--clients must be at least 1, --seconds positive and --warmup not negative")
    body = multipart(open(args.image, "rb").read() if args.image else default_image())
    threads = args.threads or os.environ.get("OMP_NUM_THREADS")
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"python {platform.python_version()}")
    print(f"# {args.clients} clients, {args.seconds:g} s measured after {args.warmup:g} s of warm-up, "
          f"model {args.model or 'shipped'}, server OMP_NUM_THREADS={threads}")
    print(f"{'max_batch':>9} {'requests':>8} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
          f"{'rss start MB':>12} {'rss end MB':>10}")
    for max_batch in (int(value) for value in args.max_batch.split(",")):
        process, port = start_server(args.model, max_batch, args.threads)
        try:
            load(port, body, args.clients, args.warmup)
            rss_start = rss_mb(process.pid)
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
        print(f"{max_batch:>9} {row['requests']:>8} {row['requests_per_s']:>7.1f} {row['p50_ms'] or 0:>7.1f} "
              f"{row['p99_ms'] or 0:>7.1f} {row['errors']:>6} {rss_start:>12.1f} {rss_end:>10.1f}")
        print(f"# json {json.dumps(row)}")


if __name__ == "__main__":
    main()
