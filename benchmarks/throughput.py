"""Training throughput: a Lightning epoch vs a plain PyTorch loop over the same data and model.

Both run the default recipe's network, loss, optimizer and augmented 256 px batches of 8 from the
resized-sample cache for the same number of steps; the difference is Lightning's overhead.

    python benchmarks/throughput.py --steps 30
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from scale_out import StepTimer

from polypseg.data.datamodule import KvasirSegDataModule
from polypseg.models.module import PolypSegModule

from common import data_root, git_sha, machine

SPLIT = Path(__file__).resolve().parents[1] / "data" / "splits" / "kvasir_seg_70_15_15.csv"


def plain_loop(module: PolypSegModule, loader, steps: int) -> float:
    optimizer = torch.optim.AdamW(module.parameters(), lr=2e-3, weight_decay=1e-4)
    module.train()
    seen, start = 0, None
    for i, batch in enumerate(loader):
        if i == 2:  # two warm-up steps, like Lightning's first steps
            start, seen = time.perf_counter(), 0
        if i == steps + 2:
            break
        optimizer.zero_grad(set_to_none=True)
        loss = module.loss(module(batch["image"]), batch["mask"])
        loss.backward()
        optimizer.step()
        seen += len(batch["image"])
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default="benchmarks/results/throughput.json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(2)
    datamodule = KvasirSegDataModule(str(data_root()), str(SPLIT), image_size=256, batch_size=8)
    datamodule.setup("fit")

    torch.manual_seed(0)
    plain = plain_loop(PolypSegModule(), datamodule.train_dataloader(), args.steps)

    torch.manual_seed(0)
    timer = StepTimer()
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=args.steps + 2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(PolypSegModule(), datamodule=datamodule)
    lightning = timer.images / (timer.end - timer.start)
    result = {
        "machine": machine(),
        "git": git_sha(),
        "steps": args.steps,
        "batch": 8,
        "size": 256,
        "plain_images_per_s": plain,
        "lightning_images_per_s": lightning,
        "lightning_overhead": 1 - lightning / plain,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
