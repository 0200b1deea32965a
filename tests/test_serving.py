"""The real LitServe server on a free loopback port: good and bad requests, OpenAPI fuzzing, shutdown."""

from __future__ import annotations

import base64
import io
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from conftest import KVASIR, REPO

pytestmark = pytest.mark.data  # reads images from ../shared/data

BIN = REPO / ".venv" / "bin"
IMAGE = min((KVASIR / "images").glob("*.jpg"), default=KVASIR / "images" / "absent.jpg")
IMAGE_BYTES = IMAGE.read_bytes() if IMAGE.is_file() else b""  # collected without the data too


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process left in the process group, read from /proc."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def start(command: list[str], cwd: Path, url: str, timeout: float = 120) -> subprocess.Popen:
    process = subprocess.Popen(
        command,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"},
    )
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited: {process.stdout.read().decode()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return process
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    raise RuntimeError(f"{command} did not answer {url} in {timeout}s")


@pytest.fixture(scope="module")
def server(tiny_onnx, tmp_path_factory):
    cwd = tmp_path_factory.mktemp("serve-cwd")
    port = free_port()
    process = start(
        [
            str(BIN / "polypseg"),
            "serve",
            f"--onnx={tiny_onnx}",
            f"--port={port}",
            "--max_upload_mb=2",
        ],
        cwd,
        f"http://127.0.0.1:{port}/health",
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(60):  # /health answers before the inference worker has loaded the model
        if (
            requests.post(
                f"{url}/predict", files={"file": IMAGE.open("rb")}, timeout=30
            ).status_code
            == 200
        ):
            break
        time.sleep(0.5)
    yield url, process, cwd
    assert group_alive(process.pid)  # the check below can see the server's processes
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    for _ in range(40):  # workers and the queue manager wind down within seconds
        if not group_alive(process.pid):
            break
        time.sleep(0.5)
    assert not group_alive(process.pid), "stray server processes after SIGTERM"
    output = process.stdout.read().decode()
    assert "Traceback" not in output and "KeyboardInterrupt" not in output, output[-3000:]


def test_png_mask_at_original_resolution(server):
    url, _, _ = server
    response = requests.post(
        f"{url}/predict", files={"file": ("x.jpg", IMAGE.read_bytes(), "image/jpeg")}
    )
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    mask = np.asarray(Image.open(io.BytesIO(response.content)))
    with Image.open(IMAGE) as original:
        assert mask.shape == (original.height, original.width)
    assert set(np.unique(mask)) <= {0, 255}


def test_json_from_base64_and_multipart_agree(server):
    url, _, _ = server
    encoded = base64.b64encode(IMAGE.read_bytes()).decode()
    as_json = requests.post(
        f"{url}/predict", json={"image": encoded, "format": "json", "threshold": 0.5}
    ).json()
    as_form = requests.post(
        f"{url}/predict", files={"file": IMAGE.open("rb")}, data={"format": "json"}
    ).json()
    assert as_json["polyp_area_fraction"] == pytest.approx(as_form["polyp_area_fraction"])
    assert {
        "height",
        "width",
        "threshold",
        "polyp_area_fraction",
        "mean_probability",
        "polyps",
        "notice",
    } <= set(as_json)
    for polyp in as_json["polyps"]:
        x, y, w, h = polyp["bbox"]
        assert 0 <= x < x + w <= as_json["width"] and 0 <= y < y + h <= as_json["height"]
    assert "NOT FOR CLINICAL USE" in as_json["notice"]


def test_threshold_changes_the_mask(server):
    url, _, _ = server
    low = requests.post(
        f"{url}/predict",
        files={"file": IMAGE.open("rb")},
        data={"format": "json", "threshold": "0.05"},
    ).json()
    high = requests.post(
        f"{url}/predict",
        files={"file": IMAGE.open("rb")},
        data={"format": "json", "threshold": "0.95"},
    ).json()
    assert low["polyp_area_fraction"] >= high["polyp_area_fraction"]


def bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buffer, format="PNG")  # 64 MP, ~60 kB compressed
    return buffer.getvalue()


def png(array: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def flat_png(width: int, height: int) -> bytes:
    """A few kB that decode to width x height pixels (the amplification attack's file)."""
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (lambda: flat_png(5000, 5000), "5000x5000"),  # 25 MP in ~3 kB
        (lambda: flat_png(1, 25_000_000), "1x25000000"),  # ~1 s of decoding per request before
        (lambda: flat_png(4000, 1000), "aspect"),
    ],
)
def test_frames_no_endoscope_makes_are_refused_from_the_header(server, data, words):
    url, _, _ = server
    response = requests.post(f"{url}/predict", files={"file": ("a.png", data(), "image/png")})
    assert response.status_code == 413, response.text
    assert words in response.json()["detail"] or "aspect ratio" in response.json()["detail"]


def test_deep_json_and_non_utf8_headers_get_4xx(server):
    url, process, _ = server
    deep = "[" * 100_000 + "]" * 100_000
    response = requests.post(
        f"{url}/predict", data=deep, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "JSON" in response.json()["detail"]
    import http.client

    host, port = url.rsplit("/", 1)[1].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", "/predict")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("X-Name", b"caf\xe9")
    connection.putheader("Content-Length", "2")
    connection.endheaders(b"{}")
    answer = connection.getresponse()
    assert 400 <= answer.status < 500, answer.read()
    assert process.poll() is None


def area(response: requests.Response) -> float:
    return float((np.asarray(Image.open(io.BytesIO(response.content))) > 0).mean())


def test_sixteen_bit_png_is_scaled_not_clipped(server):
    url, _, _ = server
    gray = np.asarray(Image.open(IMAGE).convert("L"))
    eight = requests.post(f"{url}/predict", files={"file": ("a.png", png(gray), "image/png")})
    sixteen_bit = png(gray.astype(np.uint16) * 257)
    assert Image.open(io.BytesIO(sixteen_bit)).mode.startswith("I")
    sixteen = requests.post(f"{url}/predict", files={"file": ("a.png", sixteen_bit, "image/png")})
    assert sixteen.status_code == 200 and eight.status_code == 200
    assert sixteen.content == eight.content


def test_float_tiff_is_refused_with_its_reason(server):
    url, _, _ = server
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).random((64, 64), dtype=np.float32)).save(
        buffer, format="TIFF"
    )
    response = requests.post(f"{url}/predict", files={"file": ("a.tif", buffer.getvalue())})
    assert response.status_code == 415 and "floating-point" in response.json()["detail"]


def test_exif_orientation_is_applied(server):
    url, _, _ = server
    upright = np.asarray(Image.open(IMAGE).convert("RGB"))
    stored = Image.fromarray(np.ascontiguousarray(np.rot90(upright)))  # 90° counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buffer = io.BytesIO()
    stored.save(buffer, format="PNG", exif=exif)
    rotated = requests.post(f"{url}/predict", files={"file": ("r.png", buffer.getvalue())})
    plain = requests.post(f"{url}/predict", files={"file": ("p.png", png(upright))})
    assert rotated.status_code == 200, rotated.text
    assert Image.open(io.BytesIO(rotated.content)).size == Image.open(IMAGE).size
    assert rotated.content == plain.content


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        ({"files": {"file": ("x.txt", b"hello", "text/plain")}}, 415, "not an image"),
        ({"files": {"file": ("x.jpg", IMAGE_BYTES[:3000], "image/jpeg")}}, 400, "truncated"),
        ({"files": {"file": ("x.jpg", b"", "image/jpeg")}}, 400, "empty"),
        ({"files": {"file": ("b.png", bomb(), "image/png")}}, 413, "MP"),
        ({"files": {"file": ("big.bin", os.urandom(3 * 1024 * 1024), "image/jpeg")}}, 413, ""),
        ({"files": {"other": ("x.jpg", b"x", "image/jpeg")}}, 400, "'file'"),
        (
            {"files": {"file": ("x.jpg", IMAGE_BYTES, "image/jpeg")}, "data": {"format": "gif"}},
            422,
            "format",
        ),
        (
            {"files": {"file": ("x.jpg", IMAGE_BYTES, "image/jpeg")}, "data": {"threshold": "abc"}},
            422,
            "threshold",
        ),
        (
            {"files": {"file": ("x.jpg", IMAGE_BYTES, "image/jpeg")}, "data": {"threshold": "1.5"}},
            422,
            "threshold",
        ),
        ({"json": {"image": "%%%not-base64"}}, 400, "base64"),
        ({"json": {"picture": "abc"}}, 400, "'image'"),
        ({"json": [1, 2]}, 400, "multipart"),
        (
            {"data": "not json", "headers": {"content-type": "application/json"}},
            400,
            "not valid JSON",
        ),
        (
            {"data": b"raw", "headers": {"content-type": "application/octet-stream"}},
            415,
            "multipart",
        ),
        (
            {
                "data": b"--x\r\nbroken",
                "headers": {"content-type": "multipart/form-data; boundary=x"},
            },
            400,
            "'file'",
        ),
    ],
)
def test_bad_requests_get_clear_4xx(server, kwargs, status, words):
    url, process, _ = server
    response = requests.post(f"{url}/predict", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"] if words else True
    assert process.poll() is None


def test_still_healthy_after_bad_requests_and_info(server):
    url, _, cwd = server
    health = requests.get(f"{url}/health")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    for path in ("/", "/health", "/info", "/openapi.json"):
        assert requests.get(f"{url}{path}").headers["content-type"] == "application/json", path
    info = requests.get(f"{url}/info").json()
    assert (
        info["model"]["processing"]["size"] == 64
        and "NOT FOR CLINICAL USE" in info["model"]["notice"]
    )
    assert requests.post(f"{url}/predict", files={"file": IMAGE.open("rb")}).status_code == 200
    assert list(cwd.iterdir()) == []  # no client.py or other files written
    body = requests.get(f"{url}/openapi.json").json()["paths"]["/predict"]["post"]["requestBody"][
        "content"
    ]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert body["multipart/form-data"]["schema"]["properties"]["file"]["minLength"] == 1
    assert body["application/json"]["schema"]["properties"]["image"]["minLength"] == 1


def test_sigkill_of_the_server_stops_its_workers(tiny_onnx, tmp_path):
    port = free_port()
    process = start(
        [str(BIN / "polypseg"), "serve", f"--onnx={tiny_onnx}", f"--port={port}"],
        tmp_path,
        f"http://127.0.0.1:{port}/health",
    )
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=10)
    for _ in range(40):
        if not group_alive(process.pid):
            break
        time.sleep(0.25)
    assert not group_alive(process.pid), "workers outlived their SIGKILLed parent"
    assert not listening_addresses(port)


def test_onnxruntime_telemetry_is_off_wherever_polypseg_runs():
    code = "import os, polypseg.serving.api; print(os.environ['ORT_DISABLE_TELEMETRY'])"
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    result = subprocess.run(
        [str(BIN / "python"), "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == "1"


def test_schemathesis_finds_no_server_errors(server):
    url, _, _ = server
    result = subprocess.run(
        [
            str(BIN / "schemathesis"),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--request-timeout",
            "30",
            "--phases",
            "examples,fuzzing",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=server[2].parent,  # schemathesis keeps a cache folder in its working directory
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    generated = re.search(r"(\d+) generated, (\d+) passed", result.stdout)
    assert generated and int(generated[1]) >= 20 and generated[1] == generated[2], result.stdout[
        -2000:
    ]
    assert "No issues found" in result.stdout


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses in LISTEN state on ``port``, read from /proc (no `ss` needed)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table) as fh:
            for line in list(fh)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


def test_binds_loopback_only(server):
    port = int(server[0].rsplit(":", 1)[1])
    addresses = listening_addresses(port)
    assert addresses == {"0100007F"}, addresses  # 127.0.0.1 in /proc's little-endian hex
