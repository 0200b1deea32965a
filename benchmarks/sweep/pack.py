"""Pack Kvasir-SEG, the split assignments and the offline encoder weights for ``sweep.py``.

The sweep runs on a lent GPU machine that has torch but no internet and none of our data, and
only ~64 MiB travel with a call. So: images resized once (our ``resize_image``) and stored as
JPEG, masks as packed bits, original-resolution masks only for val/test samples, and the
EfficientNet-Lite ImageNet weights without their classifier head in fp16.

    python benchmarks/sweep/pack.py --out .sweep --size 352
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from benchmarks.common import data_root
from polypseg.data.io import read_gray, read_rgb
from polypseg.data.manifest import build_manifest
from polypseg.data.splits import carve_validation
from polypseg.inference.processing import binarize_mask, resize_image, resize_mask
from polypseg.models.weights import wheel_state_dict

SPLITS = {
    "pranet": "data/splits/kvasir_pranet_900_100.csv",
    "jha": "data/splits/kvasir_jha_880_120.csv",
    "effisegnet": "data/splits/kvasir_effisegnet_800_100_100.csv",
    "ours": "data/splits/kvasir_seg_70_15_15.csv",
}
FLAT_HEAD = ("_conv_head.", "_bn1.", "_fc.")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=".sweep")
    parser.add_argument("--size", type=int, default=352)
    parser.add_argument("--quality", type=int, default=92)
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    out, root = Path(args.out), data_root()
    out.mkdir(parents=True, exist_ok=True)

    assignments, eval_names = {}, set()
    manifest = None
    for key, path in SPLITS.items():
        manifest = build_manifest(root, path)
        carved = carve_validation(
            manifest[["name", "split"]], manifest, args.val_fraction, args.seed
        )
        assignments[key] = dict(zip(manifest.name, carved.split, strict=True))
        eval_names |= {n for n, s in assignments[key].items() if s in ("val", "test")}
    names = sorted(manifest.name)

    jpegs, masks, originals = [], [], {}
    for _, row in manifest.sort_values("name").iterrows():
        image = resize_image(read_rgb(root / row["image"]), args.size)
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=args.quality)
        jpegs.append(np.frombuffer(buffer.getvalue(), dtype=np.uint8))
        gray = read_gray(root / row["mask"])
        masks.append(np.packbits(resize_mask(gray, args.size)))
        if row["name"] in eval_names:
            full = binarize_mask(gray)
            originals[row["name"]] = (full.shape, np.packbits(full))
    offsets = np.cumsum([0] + [len(j) for j in jpegs])
    np.savez_compressed(
        out / "data.npz",
        names=np.array(names),
        jpeg=np.concatenate(jpegs),
        offsets=offsets,
        masks=np.stack(masks),
        orig_names=np.array(sorted(originals)),
        orig_shapes=np.array([originals[n][0] for n in sorted(originals)]),
        orig_bits=np.concatenate([originals[n][1] for n in sorted(originals)]),
    )
    (out / "splits.json").write_text(json.dumps({"size": args.size, "splits": assignments}))
    for variant in ("lite0", "lite1", "lite2"):
        flat = wheel_state_dict(variant)
        kept = {k: v.half() for k, v in flat.items() if not k.startswith(FLAT_HEAD)}
        torch.save(kept, out / f"efficientnet-{variant}-nohead-fp16.pth")
    for path in sorted(out.iterdir()):
        print(f"{path.name}: {path.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
