"""Bounded loopback load on `polypseg serve`: req/s and latency at concurrency 1, 2, 4, with and
without dynamic batching, next to the raw ONNX throughput of the same model and image; then the
amplification attack (tiny files, huge pixel counts from 8 clients) beside one normal client.

Only 127.0.0.1 is targeted; every loop is bounded in requests and time.

    python benchmarks/serve_load.py --onnx models/polypseg.onnx --requests 60
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image

from polypseg.runtime.io import read_rgb
from polypseg.runtime.predictor import OnnxPredictor

from common import data_root, git_sha, machine

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, max_batch_size: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    exe = REPO / ".venv" / "bin" / "polypseg"
    process = subprocess.Popen(
        [
            str(exe if exe.exists() else "polypseg"),
            "serve",
            f"--onnx={model}",
            f"--port={port}",
            f"--max_batch_size={max_batch_size}",
            "--batch_timeout=0.005",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    image = sorted((data_root() / "images").glob("*.jpg"))[0].read_bytes()
    for _ in range(240):
        try:
            if requests.post(f"{url}/predict", files={"file": image}, timeout=5).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError("server did not start")


def load(url: str, image: bytes, concurrency: int, total: int) -> dict:
    def one(_):
        start = time.perf_counter()
        try:
            ok = (
                requests.post(f"{url}/predict", files={"file": image}, timeout=30).status_code
                == 200
            )
        except requests.RequestException:
            ok = False
        return ok, (time.perf_counter() - start) * 1000

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency * 2)))  # warm-up
        start = time.perf_counter()
        results = list(pool.map(one, range(total)))
        wall = time.perf_counter() - start
    latencies = sorted(ms for _, ms in results)
    return {
        "concurrency": concurrency,
        "requests": total,
        "req_per_s": total / wall,
        "p50_ms": statistics.median(latencies),
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
        "errors": sum(not ok for ok, _ in results),
    }


def flat_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


ATTACKS = {
    "none": None,
    "25 MP PNG (5000x5000)": lambda: flat_png(5000, 5000),
    "1x25,000,000 PNG": lambda: flat_png(1, 25_000_000),
    "largest accepted (4096x2160 PNG)": lambda: flat_png(4096, 2160),
}


def amplification(
    url: str, image: bytes, attack: bytes | None, total: int, clients: int = 8
) -> dict:
    """p50/p95 of ``total`` sequential normal requests while ``clients`` threads send ``attack``."""
    stop, statuses = False, []

    def attacker(_):
        while not stop:
            try:
                answer = requests.post(
                    f"{url}/predict", files={"file": ("a.png", attack, "image/png")}, timeout=60
                )
                statuses.append(answer.status_code)
            except requests.RequestException:
                statuses.append(0)

    with ThreadPoolExecutor(clients) as pool:
        if attack is not None:
            for i in range(clients):
                pool.submit(attacker, i)
            time.sleep(1.0)
        latencies, errors = [], 0
        for _ in range(total):
            start = time.perf_counter()
            try:
                ok = requests.post(f"{url}/predict", files={"file": image}, timeout=60).ok
            except requests.RequestException:
                ok = False
            errors += not ok
            latencies.append((time.perf_counter() - start) * 1000)
        stop = True
    latencies.sort()
    return {
        "attack_bytes": len(attack) if attack else 0,
        "attack_requests": len(statuses),
        "attack_statuses": sorted(set(statuses)),
        "normal_p50_ms": statistics.median(latencies),
        "normal_p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
        "normal_errors": errors,
    }


def raw_onnx(model: str, image_path: Path, total: int) -> float:
    """Images/s of predictor.predict (decode excluded) on one image, sequentially."""
    predictor = OnnxPredictor(model)
    image = read_rgb(image_path)
    for _ in range(5):
        predictor.predict(image)
    start = time.perf_counter()
    for _ in range(total):
        predictor.predict(image)
    return total / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--onnx", "--model", dest="onnx", default="models/polypseg.onnx")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--out", default="benchmarks/results/serve_load.json")
    args = parser.parse_args()
    image_path = sorted((data_root() / "images").glob("*.jpg"))[0]
    image = image_path.read_bytes()
    raw = raw_onnx(args.onnx, image_path, args.requests)
    rows = []
    for batch in (1, 4):
        process, url = start_server(args.onnx, batch)
        try:
            for concurrency in (1, 2, 4):
                row = {"max_batch_size": batch, **load(url, image, concurrency, args.requests)}
                row["vs_raw"] = row["req_per_s"] / raw
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            os.kill(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
    attacks = []
    process, url = start_server(args.onnx, 1)
    try:
        for name, make in ATTACKS.items():
            row = {"attack": name, **amplification(url, image, make() if make else None, 40)}
            attacks.append(row)
            print(json.dumps(row), flush=True)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    result = {
        "machine": machine(),
        "git": git_sha(),
        "model": args.onnx,
        "image": image_path.name,
        "raw_onnx_images_per_s": raw,
        "rows": rows,
        "amplification": attacks,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"raw ONNX: {raw:.1f} images/s")
    print(
        "| batching | concurrency | req/s | p50 ms | p95 ms | errors | vs raw |\n|---|---|---|---|---|---|---|"
    )
    for r in rows:
        print(
            f"| {r['max_batch_size']} | {r['concurrency']} | {r['req_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} "
            f"| {r['errors']} | {r['vs_raw']:.2f} |"
        )
    print(
        "\n| attack (8 clients) | file | attack requests (status) | normal p50 ms | normal p95 ms "
        "| normal errors |\n|---|---|---|---|---|---|"
    )
    for r in attacks:
        print(
            f"| {r['attack']} | {r['attack_bytes'] / 1024:.1f} kB | {r['attack_requests']} "
            f"({', '.join(map(str, r['attack_statuses']))}) | {r['normal_p50_ms']:.0f} "
            f"| {r['normal_p95_ms']:.0f} | {r['normal_errors']} |"
        )


if __name__ == "__main__":
    sys.exit(main())
