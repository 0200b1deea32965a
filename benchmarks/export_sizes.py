"""A checkpoint's network exported at several input sizes, for ``latency_files.py`` to time.

Which input size fits a latency budget depends on the graph, not on the weights, so one trained
checkpoint answers it before any training at a new size (the files are not parity-checked and
not meant to be used):

    python benchmarks/export_sizes.py models/polypseg.ckpt 192 224 256 --out /tmp/sizes
    python benchmarks/latency_files.py /tmp/sizes/*.onnx --rounds 6
"""

from __future__ import annotations

import argparse
from pathlib import Path

from polypseg.export.onnx import build_metadata, export_graph, write_metadata
from polypseg.models.checkpoints import load_module


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint")
    parser.add_argument("sizes", nargs="+", type=int)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for size in args.sizes:
        module = load_module(args.checkpoint).cpu().eval()
        module.image_size = size  # the processing metadata and the frozen graph follow it
        path = args.out / f"{Path(args.checkpoint).stem}-{size}px.onnx"
        export_graph(module.inference_network(), path, size)
        write_metadata(path, build_metadata(module))
        print(path)


if __name__ == "__main__":
    main()
