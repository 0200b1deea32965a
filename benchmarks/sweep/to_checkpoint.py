"""Wrap a network state dict from ``sweep.py`` into a checkpoint ``polypseg test`` accepts.

The sweep's scores come from its own GPU evaluation; re-testing the wrapped checkpoint with
``polypseg test`` on the CPU puts them through the real data pipeline and report.

    python benchmarks/sweep/to_checkpoint.py runs/sweep/e-l0n-256-e30.pt \
        --split-file data/splits/kvasir_effisegnet_800_100_100.csv --out runs/sweep/e.ckpt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L
import torch

from benchmarks.sweep.sweep import DECODERS
from polypseg.data.io import atomic_path
from polypseg.models.module import PolypSegModule
from polypseg.models.networks import SegmentationNetwork

INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("weights", type=Path)
    parser.add_argument("--results", default="benchmarks/results/sweep_gpu.jsonl")
    parser.add_argument("--split-file", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    runs = [json.loads(line) for line in Path(args.results).read_text().splitlines()]
    spec = [r for r in runs if r["name"] == args.weights.stem][-1]  # the latest run of that name
    network = {
        "arch": "Unet",
        "encoder_name": f"tu-tf_efficientnet_{spec['encoder']}",
        "encoder_weights": "offline",
        "decoder_channels": list(DECODERS[spec["decoder"]]),
    }
    module = PolypSegModule(
        network=SegmentationNetwork(**{**network, "encoder_weights": None}),
        mean=[0.5] * 3,
        std=[0.5] * 3,
        image_size=spec["size"],
    )
    state = torch.load(args.weights, map_location="cpu", weights_only=True)
    module.network.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    hparams = dict(module.hparams)
    hparams["network"] = {
        "class_path": "polypseg.models.networks.SegmentationNetwork",
        "init_args": network,
    }
    hparams["_instantiator"] = INSTANTIATOR  # how load_from_checkpoint rebuilds class_path dicts
    checkpoint = {
        "epoch": int(spec["best_epoch"]) - 1,
        "global_step": 0,
        "pytorch-lightning_version": L.__version__,
        "state_dict": module.state_dict(),
        "hyper_parameters": hparams,
        "hparams_name": "kwargs",
        "datamodule_hyper_parameters": {
            "split_file": args.split_file,
            "image_size": spec["size"],
            "val_fraction": 0.1,
            "seed": 42,
            "_instantiator": INSTANTIATOR,
        },
        "datamodule_hparams_name": "kwargs",
        "sweep_run": {k: v for k, v in spec.items() if k not in ("curve", "test_per_image")},
    }
    with atomic_path(args.out) as tmp:
        torch.save(checkpoint, tmp)
    print(f"wrote {args.out} ({spec['name']}: GPU test mDice {spec['test_dice']:.4f})")


if __name__ == "__main__":
    main()
