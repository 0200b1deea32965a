"""Recipe sweep on a lent GPU: many short U-Net trainings side by side, one JSON line per run.

The lent machine has torch, timm and torchmetrics but not our data pipeline's libraries, so this
script trains from the tensors ``pack.py`` wrote and augments on the GPU (flips, 90° rotations,
the default recipe's affine and colour jitter), while the network, losses, multi-scale resizing,
LR schedule and metrics are polypseg's own (``SegmentationNetwork``, ``StructureLoss``,
``rescale_batch``, ``warmup_cosine``, ``overlap_scores``, ``postprocess``); the EMA is torch's
``AveragedModel``, as in Lightning's ``EMAWeightAveraging``. Test scores are per-image Dice at the original resolution,
probabilities resized back and thresholded at 0.5 by the same ``postprocess`` as ``polypseg test``.

It chooses a recipe; the shipped model is trained by ``polypseg fit`` (see docs/results.md).

    python benchmarks/sweep/sweep.py --pack .sweep --out $OUT --workers 8 --budget-s 480
    python benchmarks/sweep/sweep.py --pack .sweep --out $OUT --plan levers --workers 12 --budget-s 500
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from PIL import Image
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from polypseg.data.multiscale import rescale_batch
from polypseg.evaluation.metrics import overlap_scores
from polypseg.inference.processing import Processing, postprocess
from polypseg.models.losses import DiceBCELoss, FocalDiceLoss, StructureLoss
from polypseg.models.networks import Normalize, SegmentationNetwork
from polypseg.models.schedules import warmup_cosine

DECODERS = {"narrow": (128, 64, 32, 16, 8), "default": (256, 128, 64, 32, 16)}
LOSSES = {
    "dicebce": DiceBCELoss,
    "dicebce-img": functools.partial(DiceBCELoss, per_image=True),
    "focaldice": FocalDiceLoss,
    "structure": StructureLoss,
}
MULTISCALE = (0.75, 1.0, 1.25)  # PraNet's multi-scale training: one scale per batch
EARLY_VAL_EVERY = 25  # steps: validate often in the first two epochs to time the climb
CKPT_DIR = Path("/tmp/sweep_ckpt")


def job(name: str, **overrides) -> dict:
    spec = {
        "split": "pranet",
        "encoder": "lite0",
        "decoder": "narrow",
        "size": 256,
        "epochs": 30,
        "seed": 0,
        "lr": 2e-3,
        "aug": "strong",
        "loss": "dicebce",
        "ema": None,  # decay of an EMA of the weights (as Lightning's EMAWeightAveraging)
        "multiscale": False,
        "batch_size": 8,
        "limit": None,  # first N samples of each part: smoke runs only
    }
    spec.update(overrides)
    spec["name"] = name
    return spec


def plan(name: str) -> list[dict]:
    """Longest first, so a deadline cuts the cheap runs, never the expensive ones half-way."""
    if name == "smoke":
        return [
            job("smoke", epochs=2, size=128, limit=24),
            job("smoke-b", epochs=1, size=96, seed=1, split="jha", limit=16),
        ]
    if name == "splits":  # second call: the published splits in full, and short schedules
        return [
            job("j-l0n-256-e30", split="jha"),
            job("e-l0n-256-e30", split="effisegnet"),
            job("p-l0n-192-e6-light-lr1e-3", size=192, epochs=6, aug="light", lr=1e-3),
            job("p-l0n-256-e6-light-lr1e-3", epochs=6, aug="light", lr=1e-3),
        ]
    if name == "levers":  # session 3: per-image losses, EMA, multi-scale, heavier augmentation
        everything = {"loss": "structure", "ema": 0.998, "multiscale": True, "aug": "heavy"}
        return [
            job("p-all-352-s0", size=352, **everything),
            job("p-all-l2-s0", encoder="lite2", **everything),
            job("p-all-s0", **everything),
            job("p-all-s1", seed=1, **everything),
            job("p-all-s2", seed=2, **everything),
            job("p-sem-s0", loss="structure", ema=0.998, multiscale=True),
            job("p-ms-s0", multiscale=True),
            job("p-struct-s0", loss="structure"),
            job("p-struct-s1", loss="structure", seed=1),
            job("p-dbimg-s0", loss="dicebce-img"),
            job("p-ema-s0", ema=0.998),
            job("p-heavy-s0", aug="heavy"),
        ]
    if name == "levers-smoke":
        return [
            job(
                "ls-all",
                epochs=2,
                size=128,
                limit=24,
                loss="structure",
                ema=0.9,
                multiscale=True,
                aug="heavy",
            ),
            job("ls-img", epochs=1, size=96, limit=16, loss="dicebce-img"),
        ]
    return [
        job("p-l2d-352-e40", encoder="lite2", decoder="default", size=352, epochs=40),
        job("p-l0n-352-e30", size=352),
        job("p-l0n-256-e60", epochs=60),
        job("p-l2n-256-e30", encoder="lite2"),
        job("p-l1n-256-e30", encoder="lite1"),
        job("p-l0d-256-e30", decoder="default"),
        job("p-l0n-256-e30-s0"),
        job("p-l0n-256-e30-s1", seed=1),
        job("p-l0n-256-e30-s2", seed=2),
        job("p-l0n-192-e30-s0", size=192),
        job("p-l0n-192-e30-s1", size=192, seed=1),
        job("p-l0n-224-e30", size=224),
        job("j-l0n-256-e30", split="jha"),
        job("e-l0n-256-e30", split="effisegnet"),
        job("o-l0n-256-e30", split="ours"),
        job("p-l0n-256-e30-light", aug="light"),
        job("p-l0n-256-e30-lr4e-3", lr=4e-3),
        job("p-l0n-256-e30-focal", loss="focaldice"),
        job("p-l0n-256-e15", epochs=15),
        job("p-l0n-192-e15-lr4e-3", size=192, epochs=15, lr=4e-3),
    ]


class Pack:
    """Decoded images (uint8, N,3,S,S) and masks on the device, resized per job size on demand."""

    def __init__(self, folder: Path, device: torch.device):
        data = np.load(folder / "data.npz")
        meta = json.loads((folder / "splits.json").read_text())
        self.folder, self.device, self.size = folder, device, meta["size"]
        self.names = [str(n) for n in data["names"]]
        self.splits = meta["splits"]
        jpeg, offsets = data["jpeg"], data["offsets"]
        images = np.stack(
            [
                np.asarray(Image.open(io.BytesIO(jpeg[offsets[i] : offsets[i + 1]].tobytes())))
                for i in range(len(self.names))
            ]
        )
        s = self.size
        masks = np.unpackbits(data["masks"], axis=1)[:, : s * s].reshape(-1, 1, s, s)
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
        self.masks = torch.from_numpy(masks).to(device)
        self.originals = {}
        bits, start = data["orig_bits"], 0
        for name, (h, w) in zip(data["orig_names"], data["orig_shapes"], strict=True):
            nbytes = math.ceil(h * w / 8)
            full = np.unpackbits(bits[start : start + nbytes])[: h * w].reshape(h, w)
            self.originals[str(name)] = torch.from_numpy(full).to(device)
            start += nbytes
        self._resized: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def at(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images float [0,1] and {0,1} masks at ``size`` (area-like resize, as resize_mask)."""
        if size not in self._resized:
            images = self.images.float() / 255.0
            masks = self.masks.float()
            if size != self.size:
                images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
                masks = (F.interpolate(masks, size=(size, size), mode="area") > 0.5).float()
            self._resized = {size: (images.clamp_(0, 1), masks)}
        return self._resized[size]

    def indices(self, split_key: str, part: str, limit: int | None = None) -> list[int]:
        assignment = self.splits[split_key]
        return [i for i, n in enumerate(self.names) if assignment[n] == part][:limit]


# affine/colour ranges: "strong" = polypseg's default_train_transforms, "heavy" = wider ranges
AUG = {
    "strong": {"p": 0.5, "scale": 0.15, "deg": 20, "shift": 0.08, "bc": 0.2, "sat": 0.15},
    "heavy": {"p": 0.7, "scale": 0.3, "deg": 45, "shift": 0.1, "bc": 0.3, "sat": 0.25},
}


def augment(x: torch.Tensor, m: torch.Tensor, level: str, gen: torch.Generator):
    """Flips and 90° rotations (p 0.5 each); "strong"/"heavy" add affine and colour jitter."""
    dev = x.device

    def coin(n: int = 1, p: float = 0.5) -> torch.Tensor:
        return torch.rand(n, generator=gen) < p

    xs, ms = [], []
    for xi, mi in zip(x, m, strict=True):
        if coin():
            xi, mi = xi.flip(-1), mi.flip(-1)
        if coin():
            xi, mi = xi.flip(-2), mi.flip(-2)
        if coin():
            k = int(torch.randint(1, 4, (1,), generator=gen))
            xi, mi = xi.rot90(k, (-2, -1)), mi.rot90(k, (-2, -1))
        xs.append(xi)
        ms.append(mi)
    x, m = torch.stack(xs), torch.stack(ms)
    if level not in AUG:
        return x, m
    a, n = AUG[level], len(x)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    apply = coin(n, a["p"])
    scale = uniform(1 - a["scale"], 1 + a["scale"])
    angle = uniform(-a["deg"], a["deg"]) * math.pi / 180
    shift = 2 * a["shift"]  # fraction of the side, in [-1, 1] grid coordinates
    tx, ty = uniform(-shift, shift), uniform(-shift, shift)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1
    )  # (n, 2, 3)
    theta[~apply] = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    grid = F.affine_grid(theta.to(dev), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = F.grid_sample(m, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    jitter = coin(n, a["p"]).to(dev).view(n, 1, 1, 1)
    b = uniform(1 - a["bc"], 1 + a["bc"]).to(dev).view(n, 1, 1, 1)
    c = uniform(1 - a["bc"], 1 + a["bc"]).to(dev).view(n, 1, 1, 1)
    s = uniform(1 - a["sat"], 1 + a["sat"]).to(dev).view(n, 1, 1, 1)
    y = x * b
    gray = (0.299 * y[:, :1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:]).clamp(0, 1)
    y = ((y - gray.mean((2, 3), keepdim=True)) * c + gray.mean((2, 3), keepdim=True)).clamp(0, 1)
    gray = 0.299 * y[:, :1] + 0.587 * y[:, 1:2] + 0.114 * y[:, 2:]
    y = ((y - gray) * s + gray).clamp(0, 1)
    return torch.where(jitter, y, x), m


def probabilities(model, normalize, images: torch.Tensor, tta: bool = False) -> torch.Tensor:
    """Sigmoid outputs (N,1,S,S) in batches of 32; ``tta`` averages the four flip combinations."""
    out = []
    with torch.no_grad():
        for chunk in images.split(32):
            flips = [(), (-1,), (-2,), (-1, -2)] if tta else [()]
            acc = 0
            for dims in flips:
                xi = chunk.flip(dims) if dims else chunk
                p = torch.sigmoid(
                    model(normalize(xi).contiguous(memory_format=torch.channels_last))
                )
                acc = acc + (p.flip(dims) if dims else p)
            out.append(acc / len(flips))
    return torch.cat(out)


def mean_dice_low(prob: torch.Tensor, masks: torch.Tensor) -> float:
    return float(overlap_scores(prob > 0.5, masks, ("dice",))["dice"].float().mean())


def original_scores(prob: torch.Tensor, names: list[str], pack: Pack) -> dict[str, float]:
    """Per-image Dice/IoU at the original resolution, averaged (the papers' mDice/mIoU), through
    polypseg's own ``postprocess`` (resize probabilities back, threshold 0.5)."""
    processing = Processing(size=prob.shape[-1], threshold=0.5)
    dice, iou = [], []
    for p, name in zip(prob[:, 0].float().cpu().numpy(), names, strict=True):
        target = pack.originals[name].cpu()
        mask = postprocess(p, *target.shape, processing)
        scores = overlap_scores(torch.from_numpy(mask), target, ("dice", "iou"))
        dice.append(float(scores["dice"][0]))
        iou.append(float(scores["iou"][0]))
    return {"dice": float(np.mean(dice)), "iou": float(np.mean(iou)), "dice_all": dice}


def train(spec: dict, pack: Pack, pack_dir: Path, deadline: float) -> dict:
    dev = pack.device
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    images, masks = pack.at(spec["size"])
    train_idx = torch.tensor(pack.indices(spec["split"], "train", spec["limit"]))
    val_idx = pack.indices(spec["split"], "val", spec["limit"])
    test_idx = pack.indices(spec["split"], "test", spec["limit"])
    weights = pack_dir / f"efficientnet-{spec['encoder']}-nohead-fp16.pth"
    model = SegmentationNetwork(
        encoder_name=f"tu-tf_efficientnet_{spec['encoder']}",
        encoder_weights=str(weights),
        decoder_channels=DECODERS[spec["decoder"]],
    ).to(dev, memory_format=torch.channels_last)
    normalize = Normalize((0.5,) * 3, (0.5,) * 3).to(dev)
    loss_fn = LOSSES[spec["loss"]]().to(dev)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=spec["lr"], weight_decay=1e-4, fused=dev.type == "cuda"
    )
    bs = spec["batch_size"]
    steps_per_epoch = len(train_idx) // bs  # the datamodule drops the last partial batch
    total = steps_per_epoch * spec["epochs"]
    schedule = warmup_cosine(optimizer, total, min(30, max(1, total // 10)))
    ema = None
    if spec["ema"]:
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(spec["ema"]), use_buffers=True)
    evaluated = ema.module if ema is not None else model  # the EMA weights are the model
    val_x, val_m = images[val_idx], masks[val_idx]
    curve, best, best_state, step, truncated = [], -1.0, None, 0, False
    raw_best, raw_state = -1.0, None  # EMA runs: the raw weights too, a paired comparison
    start = time.time()

    def validate(epoch: float) -> float:
        model.eval()
        evaluated.eval()
        dice = mean_dice_low(probabilities(evaluated, normalize, val_x), val_m)
        point = {"epoch": epoch, "step": step, "s": round(time.time() - start, 2), "val": dice}
        if ema is not None:
            point["val_raw"] = mean_dice_low(probabilities(model, normalize, val_x), val_m)
        model.train()
        curve.append(point)
        return dice

    model.train()
    for epoch in range(spec["epochs"]):
        order = train_idx[torch.randperm(len(train_idx), generator=gen)]
        for i in range(steps_per_epoch):
            idx = order[i * bs : (i + 1) * bs].to(dev)
            x, m = augment(images[idx], masks[idx], spec["aug"], gen)
            if spec["multiscale"]:
                x, m = rescale_batch(x, m, MULTISCALE[int(torch.randint(3, (1,), generator=gen))])
            logits = model(normalize(x).contiguous(memory_format=torch.channels_last))
            loss = loss_fn(logits, m)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            if epoch < 2 and step % EARLY_VAL_EVERY == 0 and i < steps_per_epoch - 1:
                validate(epoch + (i + 1) / steps_per_epoch)
        dice = validate(epoch + 1)
        if dice > best:
            best = dice
            best_state = {k: v.detach().clone() for k, v in evaluated.state_dict().items()}
        if ema is not None and curve[-1]["val_raw"] > raw_best:
            raw_best = curve[-1]["val_raw"]
            raw_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if time.time() > deadline:
            truncated = epoch + 1 < spec["epochs"]
            break
    names = [pack.names[i] for i in test_idx]
    test_x = images[test_idx]
    extra = {}
    if raw_state is not None:
        model.load_state_dict(raw_state)
        model.eval()
        raw = original_scores(probabilities(model, normalize, test_x), names, pack)
        extra = {"best_val_raw": raw_best, "test_dice_raw": raw["dice"]}
    model.load_state_dict(best_state)
    model.eval()
    plain = original_scores(probabilities(model, normalize, test_x), names, pack)
    tta = original_scores(probabilities(model, normalize, test_x, tta=True), names, pack)
    first_085 = next((c for c in curve if c["val"] >= 0.85), None)
    CKPT_DIR.mkdir(exist_ok=True)
    torch.save(
        {k: v.half() if v.is_floating_point() else v for k, v in best_state.items()},
        CKPT_DIR / f"{spec['name']}.pt",
    )
    return {
        **spec,
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "test_images": len(test_idx),
        "best_val": best,
        "best_epoch": max(curve, key=lambda c: c["val"])["epoch"],
        "test_dice": plain["dice"],
        "test_iou": plain["iou"],
        "test_dice_tta": tta["dice"],
        "test_per_image": [round(d, 4) for d in plain["dice_all"]],
        "first_val_085": first_085,
        "train_s": round(time.time() - start, 1),
        "epochs_done": int(curve[-1]["epoch"]) if curve else 0,
        "truncated": truncated,
        **extra,
        "curve": curve,
    }


def worker(rank: int, jobs, pack_dir: str, out: str, deadline: float, device: str) -> None:
    dev = torch.device(device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.set_num_threads(1)
    pack = Pack(Path(pack_dir), dev)
    while True:
        try:
            spec = jobs.get_nowait()
        except Exception:  # queue.Empty
            return
        if time.time() > deadline - 20:
            return
        t0 = time.time()
        print(f"[{rank}] start {spec['name']}", flush=True)
        try:
            result = train(spec, pack, Path(pack_dir), deadline)
        except Exception as exc:  # one broken recipe must not sink the sweep
            result = {**spec, "error": repr(exc)}
        result["wall_s"] = round(time.time() - t0, 1)
        line = json.dumps(result)
        with open(Path(out) / "results.jsonl", "a") as fh:
            fh.write(line + "\n")
        print(
            f"[{rank}] done {spec['name']} val {result.get('best_val')} "
            f"test {result.get('test_dice')} in {result['wall_s']} s",
            flush=True,
        )


def keep_checkpoints(out: Path, limit: int = 5) -> list[str]:
    """Copy the checkpoints worth a CPU re-test back: only a few files may leave the machine."""
    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    done = [r for r in results if "error" not in r]

    def best(pred) -> str | None:
        chosen = [r for r in done if pred(r)]
        return max(chosen, key=lambda r: r["best_val"])["name"] if chosen else None

    picks = [
        best(lambda r: r["split"] == "pranet"),
        best(lambda r: r["split"] == "pranet" and r["encoder"] == "lite0" and r["size"] <= 256),
        best(lambda r: r["split"] == "pranet" and r["size"] == 192),
        best(lambda r: r["split"] == "jha"),
        best(lambda r: r["split"] == "effisegnet"),
        best(lambda r: r["split"] == "ours"),
    ]
    kept = list(dict.fromkeys(p for p in picks if p))[:limit]
    for name in kept:
        shutil.copy(CKPT_DIR / f"{name}.pt", out / f"{name}.pt")
    return kept


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pack", default=".sweep")
    parser.add_argument("--out", default=os.environ.get("OUT", "sweep-out"))
    parser.add_argument("--plan", default="default")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--budget-s", type=float, default=480)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + args.budget_s
    ctx = mp.get_context("spawn")
    jobs = ctx.Queue()
    for spec in plan(args.plan):
        jobs.put(spec)
    procs = [
        ctx.Process(target=worker, args=(r, jobs, args.pack, str(out), deadline, args.device))
        for r in range(args.workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=max(1.0, deadline + 45 - time.time()))
    for p in procs:
        if p.is_alive():
            p.terminate()
    if (out / "results.jsonl").exists():
        print("kept", keep_checkpoints(out), flush=True)
    machine = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    (out / "machine.json").write_text(
        json.dumps({"device": machine, "torch": torch.__version__, "workers": args.workers})
    )


if __name__ == "__main__":
    main()
