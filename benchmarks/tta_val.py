"""Val mDice (network resolution) of a checkpoint without TTA, with flips and with D4 views; a TTA is
kept only if it helps on val.

python benchmarks/tta_val.py --ckpt checkpoints/unet/best.ckpt
"""

from __future__ import annotations

import argparse
import json
import time

from polypseg.evaluation.threshold import sweep, val_probabilities
from polypseg.models.checkpoints import load_datamodule, load_module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ckpt", required=True)
    args = parser.parse_args()
    module = load_module(args.ckpt)
    datamodule = load_datamodule(args.ckpt)
    threshold = module.processing.threshold
    result = {}
    for tta in (False, "flips", "d4"):
        module.tta = tta
        start = time.perf_counter()
        prob, mask = val_probabilities(module, datamodule)
        result[f"tta={tta}"] = {  # at the checkpoint's tuned threshold, no clean-up
            "val_dice": sweep(prob, mask, [threshold])[threshold],
            "seconds": time.perf_counter() - start,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
