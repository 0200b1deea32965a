"""CPU latency of candidate networks: PyTorch eager vs ONNX Runtime fp32 vs int8 (static QDQ).

Latency does not depend on trained weights, so candidates are measured with random decoders and
the exported graph polypseg ships (normalise + network + sigmoid). GFLOPs are counted by
torch.utils.flop_counter (a multiply-add = 2 FLOPs) for one 3xSxS image.

    python benchmarks/latency.py                 # full table (~10 min on 2 cores)
    python benchmarks/latency.py --runs 20 --only unet-lite0-narrow-256
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from polypseg.export.onnx import export_onnx
from polypseg.export.quantize import quantize_int8
from polypseg.models.module import PolypSegModule
from polypseg.models.networks import SegmentationNetwork
from polypseg.runtime.predictor import OnnxPredictor

from common import data_root, git_sha, machine, time_call

NARROW = (128, 64, 32, 16, 8)
CANDIDATES = {
    # name: (arch, encoder, decoder_channels or None for smp default, input size)
    "unet-resnet34-256 (seed)": ("Unet", "resnet34", None, 256),
    "unet-lite0-default-256": ("Unet", "tu-tf_efficientnet_lite0", None, 256),
    "unet-lite0-narrow-256": ("Unet", "tu-tf_efficientnet_lite0", NARROW, 256),
    "unet-lite0-narrow-224": ("Unet", "tu-tf_efficientnet_lite0", NARROW, 224),
    "unet-lite0-narrow-192": ("Unet", "tu-tf_efficientnet_lite0", NARROW, 192),
    "unet-lite0-narrower-256": ("Unet", "tu-tf_efficientnet_lite0", (64, 32, 16, 16, 8), 256),
    "unet-lite1-narrow-256": ("Unet", "tu-tf_efficientnet_lite1", NARROW, 256),
    "unet-lite2-narrow-256": ("Unet", "tu-tf_efficientnet_lite2", NARROW, 256),
    "unet-mobilenetv2-narrow-256": ("Unet", "mobilenet_v2", NARROW, 256),
    "fpn-lite0-256": ("FPN", "tu-tf_efficientnet_lite0", None, 256),
    "unetplusplus-lite0-narrow-256": ("UnetPlusPlus", "tu-tf_efficientnet_lite0", NARROW, 256),
}


def gflops(module: torch.nn.Module, size: int) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(torch.rand(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def measure(
    name: str,
    arch: str,
    encoder: str,
    decoder,
    size: int,
    runs: int,
    calib: list[np.ndarray],
    work: Path,
) -> dict:
    torch.manual_seed(0)
    network = SegmentationNetwork(arch, encoder, None, decoder)
    module = PolypSegModule(network=network, image_size=size, channels_last=False).eval()
    net = module.inference_network()
    row = {
        "model": name,
        "arch": arch,
        "encoder": encoder,
        "decoder": list(decoder) if decoder else "default",
        "size": size,
        "params_M": sum(p.numel() for p in network.parameters()) / 1e6,
        "gflops": gflops(net, size),
    }
    images = calib
    fp32, int8 = work / f"{name}.onnx", work / f"{name}.int8.onnx"
    export_onnx(module, fp32, images[:2], tolerance=1e-2)
    try:
        quantize_int8(
            fp32,
            int8,
            images,
            [(im, np.zeros(im.shape[:2], np.uint8)) for im in images[:2]],
            max_dice_drop=1.0,
        )
    except (
        Exception
    ) as exc:  # some graphs (FPN's broadcast Add) do not quantize with ORT's QDQ kernels
        row["int8_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
    row["onnx_MB"] = fp32.stat().st_size / 1e6
    row["int8_MB"] = int8.stat().st_size / 1e6 if int8.exists() else None
    for batch in (1, 8):
        x = torch.rand(batch, 3, size, size)
        with torch.no_grad():
            row[f"torch_b{batch}"] = time_call(
                lambda x=x: net(x), runs if batch == 1 else max(10, runs // 5)
            )
        for kind, path in (("onnx_fp32", fp32), ("onnx_int8", int8)):
            if not path.exists():
                row[f"{kind}_b{batch}"] = None
                continue
            predictor = OnnxPredictor(path)
            xn = x.numpy()
            row[f"{kind}_b{batch}"] = time_call(
                lambda p=predictor, xn=xn: p.run(xn), runs if batch == 1 else max(10, runs // 5)
            )
    row["gflops_per_s_fp32_b1"] = row["gflops"] / (row["onnx_fp32_b1"]["median_ms"] / 1000)
    return row


def _ms(cell: dict | None, p95: bool = False) -> str:
    if cell is None:
        return "fails"
    return f"{cell['median_ms']:.1f} ({cell['p95_ms']:.1f})" if p95 else f"{cell['median_ms']:.0f}"


def markdown(rows: list[dict]) -> str:
    head = (
        "| model | size | params M | GFLOPs | torch b1 ms | ONNX fp32 b1 ms (p95) | ONNX int8 b1 ms (p95) "
        "| ONNX fp32 b8 ms | ONNX int8 b8 ms | GFLOP/s fp32 |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['size']} | {r['params_M']:.1f} | {r['gflops']:.2f} | {r['torch_b1']['median_ms']:.1f} "
            f"| {r['onnx_fp32_b1']['median_ms']:.1f} ({r['onnx_fp32_b1']['p95_ms']:.1f}) "
            f"| {_ms(r['onnx_int8_b1'], True)} "
            f"| {r['onnx_fp32_b8']['median_ms']:.0f} | {_ms(r['onnx_int8_b8'])} | {r['gflops_per_s_fp32_b1']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--out", default="benchmarks/results/latency.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    from polypseg.runtime.io import read_rgb

    kvasir = data_root() / "images"
    calib = (
        [read_rgb(p) for p in sorted(kvasir.glob("*.jpg"))[:16]]
        if kvasir.is_dir()
        else [
            np.random.default_rng(i).integers(0, 255, (256, 256, 3), dtype=np.uint8)
            for i in range(16)
        ]
    )
    from polypseg.runtime.processing import resize_image

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in CANDIDATES.items():
            if args.only and name not in args.only:
                continue
            arch, encoder, decoder, size = spec
            row = measure(
                name,
                arch,
                encoder,
                decoder,
                size,
                args.runs,
                [resize_image(c, size) for c in calib],
                Path(tmp),
            )
            rows.append(row)
            print(
                json.dumps(
                    {k: row[k] for k in ("model", "gflops", "onnx_fp32_b1", "onnx_int8_b1")}
                ),
                flush=True,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"machine": machine(), "git": git_sha(), "runs": args.runs, "rows": rows}, indent=2
        )
    )
    print(
        f"\nMachine: {machine()}; commit {git_sha()}; {args.runs} runs after 5 warm-up, median (p95)\n"
    )
    print(markdown(rows))


if __name__ == "__main__":
    main()
