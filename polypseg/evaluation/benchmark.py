"""``polypseg benchmark``: one model (ONNX, optional TTA) or a folder of any method's 8-bit maps,
scored on several test sets in the papers' metrics, with 95 % bootstrap intervals.

Test sets come from YAML (``--config configs/benchmark/pranet.yaml`` fills the ``test_sets``
argument), each with its own root, split file and mask rule; roots are relative to ``--data_dir``
(default ``$POLYPSEG_DATA_DIR``, else the folder holding ``$POLYPSEG_DATA_ROOT``, else ``data``).
A set of polyp-free frames (``negatives: true``) reports the share of frames with any predicted
polyp pixel instead (after the model's threshold and clean-up; maps: ``map >= 128``). No training
or val source has polyp-free frames, so ``polyp_free_views: true`` makes them from a set's frames
(:func:`polyp_free_views`, models only): what val can say about frames without a polyp.
"""

from __future__ import annotations

import csv
import heapq
import json
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml
from PIL import Image

from polypseg.data.roots import resolve_data_dir
from polypseg.evaluation.papers import PAPER_METRICS, PaperScores, paper_map
from polypseg.evaluation.report import gallery, resamples
from polypseg.runtime.io import atomic_path, list_images, read_mask, read_rgb
from polypseg.runtime.metrics import overlap_scores
from polypseg.runtime.processing import binarize_mask, postprocess, preprocess
from polypseg.runtime.tta import TTA


@dataclass
class TestSet:
    """One test set.

    Args:
        key: short name; the maps of a method live in ``<maps>/<key>/``.
        name: what the table calls it.
        root: folder with ``images/`` and ``masks/`` (relative to the data dir).
        split_file: ``name,split`` CSV; ``None`` scores every image.
        split: which part of the split file.
        negatives: polyp-free frames (empty masks): report the share with a predicted polyp.
        polyp_free_views: score the polyp-free halves of each frame instead
            (:func:`polyp_free_views`), reported like ``negatives``.
    """

    key: str
    name: str
    root: str
    split_file: str | None = None
    split: str = "test"
    negatives: bool = False
    polyp_free_views: bool = False

    @property
    def polyp_free(self) -> bool:
        """Scored as the share of images with a predicted polyp, not by overlap."""
        return self.negatives or self.polyp_free_views


def polyp_free_views(image: np.ndarray, truth: np.ndarray, margin: float = 0.02) -> dict:
    """The halves of a frame (``left``, ``right``, ``top``, ``bottom``) that stay ``margin`` of the
    shorter side away from its polyp: polyp-free views of frames that all show one.

    Example:
        >>> truth = np.zeros((100, 200), bool)
        >>> truth[40:60, 150:190] = True
        >>> sorted(polyp_free_views(np.zeros((100, 200, 3), np.uint8), truth))
        ['left']
    """
    h, w = truth.shape
    grow = max(1, round(margin * min(h, w)))
    near = cv2.dilate(truth.astype(np.uint8), np.ones((2 * grow + 1,) * 2, np.uint8))
    halves = {
        "left": np.s_[:, : w // 2],
        "right": np.s_[:, w - w // 2 :],
        "top": np.s_[: h // 2],
        "bottom": np.s_[h - h // 2 :],
    }
    return {side: image[view] for side, view in halves.items() if not near[view].any()}


def read_test_sets(config: str | Path) -> list[TestSet]:
    """The ``test_sets`` list of a benchmark YAML, each entry checked."""
    entries = (yaml.safe_load(Path(config).read_text()) or {}).get("test_sets")
    if not entries:
        raise ValueError(f"{config}: no test_sets list; see configs/benchmark/pranet.yaml")
    sets = []
    for i, entry in enumerate(entries):
        try:
            sets.append(TestSet(**entry))
        except TypeError as exc:
            raise ValueError(f"{config}: test_sets[{i}]: {exc}") from None
    return sets


def samples(test_set: TestSet, data_dir: Path) -> list[tuple[str, Path, Path]]:
    """``(name, image, mask)`` of the set, in name order; missing files named."""
    root = data_dir / test_set.root
    if not (root / "images").is_dir():
        raise FileNotFoundError(f"{root}: no images/ folder for test set '{test_set.key}'")
    images, masks = list_images(root / "images"), list_images(root / "masks")
    names = sorted(images)
    if test_set.split_file:
        with open(test_set.split_file) as fh:
            names = sorted(r["name"] for r in csv.DictReader(fh) if r["split"] == test_set.split)
    missing = [n for n in names if n not in images or n not in masks]
    if missing:
        raise FileNotFoundError(
            f"{root}: {len(missing)} image/mask pair(s) of {test_set.split_file or 'the folder'} "
            f"missing, e.g. {missing[:3]}"
        )
    return [(n, images[n], masks[n]) for n in names]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


class MapSource:
    """Maps (and the model's masks) for one image: from an ONNX model or a folder of PNGs."""

    def __init__(self, model: str | None, maps: str | None, tta=False):
        if (model is None) == (maps is None):
            raise ValueError("give exactly one of --onnx (ONNX file) or --maps (folder of maps)")
        self.maps = Path(maps) if maps else None
        self.predictor = None
        if model:
            from polypseg.runtime.predictor import OnnxPredictor

            self.predictor = OnnxPredictor(model, tta=tta)

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(paper map uint8, binary mask)`` of the model for one RGB image, at its size."""
        h, w = image.shape[:2]
        processing = self.predictor.processing
        prob = self.predictor.probabilities(preprocess(image, processing))[0]
        return paper_map(prob, h, w), postprocess(prob, h, w, processing)

    def __call__(self, key: str, name: str, image_path: Path, shape: tuple[int, int]):
        """``(paper map uint8, binary mask)`` at ``shape``."""
        h, w = shape
        if self.predictor is None:
            path = self.maps / key / f"{name}.png"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no map for '{name}' (maps are named like masks)")
            found = np.asarray(Image.open(path).convert("L"))
            if found.shape != (h, w):  # main.m: imresize to the mask's size
                found = np.asarray(Image.fromarray(found).resize((w, h), Image.BILINEAR))
            return found, (found >= 128).astype(np.uint8)
        image = read_rgb(image_path)
        if image.shape[:2] != (h, w):
            raise ValueError(f"{image_path}: image {image.shape[:2]} and mask {shape} differ")
        return self.predict(image)


def score_views(test_set: TestSet, data_dir: Path, source: MapSource, out: Path) -> dict:
    """The share of ``test_set``'s polyp-free views (:func:`polyp_free_views`) with a predicted
    polyp; writes their per-view CSV under ``out``."""
    from rich.progress import track

    rows = []
    for name, image_path, mask_path in track(
        samples(test_set, data_dir), description=f"{test_set.key:>20}"
    ):
        truth = binarize_mask(read_mask(mask_path)).astype(bool)
        for side, view in polyp_free_views(read_rgb(image_path), truth).items():
            _, mask = source.predict(view)
            rows.append({"name": name, "view": side, "predicted_polyp": bool(mask.any())})
    write_rows(out / "per_image.csv", rows, ["name", "view", "predicted_polyp"])
    return flagged_share(rows, unit="views")


def write_rows(path: Path, rows: list[dict], fields: list[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def flagged_share(rows: list[dict], unit: str = "frames") -> dict:
    """How many polyp-free images got a predicted polyp."""
    flagged = np.array([r["predicted_polyp"] for r in rows], dtype=float)
    return {
        "images": len(rows),
        "frames_with_polyp": int(flagged.sum()),
        "share": float(flagged.mean()) if rows else float("nan"),
        "unit": unit,
    }


def score_set(
    test_set: TestSet, data_dir: Path, source: MapSource, out: Path, worst_k: int = 8
) -> dict:
    """Score one set; writes its maps (model only), per-image CSV and ``worst_cases.png``, where to
    look for failure modes: the ``worst_k`` lowest-Dice frames, or of polyp-free frames those with
    the largest predicted area."""
    from rich.progress import track

    papers, rows, worst = PaperScores(), [], []
    for name, image_path, mask_path in track(
        samples(test_set, data_dir), description=f"{test_set.key:>20}"
    ):
        truth = binarize_mask(read_mask(mask_path)).astype(bool)
        the_map, mask = source(test_set.key, name, image_path, truth.shape)
        if source.predictor is not None:
            with atomic_path(out / "maps" / f"{name}.png") as tmp:
                Image.fromarray(the_map).save(tmp, format="PNG")
        row = {"name": name, "predicted_polyp": bool(mask.any())}
        if test_set.negatives:
            badness = float(mask.mean())  # share of the frame marked as polyp
        else:
            scores = overlap_scores(mask, truth, ("dice", "precision", "recall"))
            row.update({k: float(v[0]) for k, v in scores.items()})
            row.update(papers.add(the_map, truth))
            badness = 1.0 - row["dice"]
        if badness > 0:  # a bounded min-heap keeps only the worst frames' masks in memory
            heapq.heappush(worst, (badness, len(rows), image_path, truth, mask))
            if len(worst) > worst_k:
                heapq.heappop(worst)
        rows.append(row)
    write_rows(out / "per_image.csv", rows, list(rows[0]))
    if worst:
        worst.sort(key=lambda w: (-w[0], w[1]))
        gallery(((read_rgb(w[2]), w[3], w[4]) for w in worst), out / "worst_cases.png")
    if test_set.negatives:
        return flagged_share(rows)
    return {"images": len(rows), **interval_table(papers, rows)}


def interval_table(papers: PaperScores, rows: list[dict], draws: int = 1000) -> dict:
    """Each metric with its 95 % percentile bootstrap interval (images resampled, seed 0)."""
    point = {**papers.results(), "dice": float(np.mean([r["dice"] for r in rows]))}
    dice = np.array([r["dice"] for r in rows])
    samples_ = [
        {**papers.results(pick), "dice": float(dice[pick].mean())}
        for pick in resamples(len(rows), draws)
    ]
    return {
        k: {
            "value": v,
            "ci95": [float(np.percentile([s[k] for s in samples_], q)) for q in (2.5, 97.5)],
        }
        for k, v in point.items()
    }


def markdown(results: dict, label: str) -> str:
    """The table: papers' metrics, then polypseg's thresholded per-image Dice."""
    head = ["test set", "images", *PAPER_METRICS, "dice (ours, thresholded)"]
    lines = [
        f"Scored: {label}. meanDic … MAE are the papers' metrics (PraNet's main.m, via "
        "pysodmetrics); 'dice' is polypseg's Dice of the thresholded mask per image.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in results.values():
        if "share" in r:
            unit = r.get("unit", "frames")
            cell = f"{r['frames_with_polyp']} of {r['images']} {unit} with a predicted polyp"
            lines.append(f"| {r['name']} | {r['images']} | {cell} |" + " |" * len(PAPER_METRICS))
            continue
        cells = [
            f"{r[m]['value']:.3f} [{r[m]['ci95'][0]:.3f}, {r[m]['ci95'][1]:.3f}]"
            if m in ("meanDic", "dice")
            else f"{r[m]['value']:.3f}"
            for m in (*PAPER_METRICS, "dice")
        ]
        if "dice" in r and r.get("from_maps"):
            cells[-1] = "n/a"  # a map has no threshold of its own
        lines.append(f"| {r['name']} | {r['images']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def benchmark(
    test_sets: list[TestSet] | None = None,
    onnx: str | None = None,
    maps: str | None = None,
    tta: TTA = False,
    data_dir: str | None = None,
    output: str = "reports/benchmark",
    against: str | None = None,
    mlflow_log: bool = False,
) -> dict:
    """Score ``onnx`` (an exported file) or ``maps`` (``<maps>/<key>/<name>.png``, any method's 8-bit maps)
    on every test set; write maps, per-image CSVs, each set's ``worst_cases.png``, ``results.json``/``.csv``/``.md``
    under ``output`` and print the table.

    Args:
        test_sets: the sets to score (from ``--config configs/benchmark/pranet.yaml``, or
            :func:`read_test_sets` in Python).
        onnx: an exported polypseg ONNX file.
        maps: a folder of 8-bit prediction maps, one subfolder per test set key.
        tta: ``true``/``flips`` or ``d4`` views averaged (onnx only).
        data_dir: folder the test sets' roots are relative to.
        output: report folder.
        against: another benchmark's output folder (same test sets): the paired meanDic
            difference per set, this run minus that one, with its 95 % interval.
        mlflow_log: also log the numbers and files as an MLflow run.

    Example:
        ``polypseg benchmark --onnx models/polypseg.onnx --config configs/benchmark/pranet.yaml``
    """
    if not test_sets:
        raise ValueError("no test sets: pass --config configs/benchmark/pranet.yaml (or your own)")
    data_root = resolve_data_dir(data_dir)
    source = MapSource(onnx, maps, tta)
    label = f"{onnx}{' + TTA ' + str(tta) if tta else ''}" if onnx else f"maps in {maps}"
    out, results = Path(output), {}
    for test_set in test_sets:
        if maps and not (Path(maps) / test_set.key).is_dir():
            print(f"{maps}/{test_set.key}: no maps for '{test_set.name}'; set skipped")
            continue
        set_out = out / _slug(test_set.key)
        if test_set.polyp_free_views:
            if maps:
                print(f"'{test_set.name}': polyp-free views need a model (--onnx); set skipped")
                continue
            result = score_views(test_set, data_root, source, set_out)
        else:
            result = score_set(test_set, data_root, source, set_out)
        results[test_set.key] = {"name": test_set.name, **result, "from_maps": maps is not None}
        if against and not test_set.polyp_free:
            from polypseg.evaluation.compare import compare

            previous = Path(against) / _slug(test_set.key) / "per_image.csv"
            results[test_set.key]["paired_vs_against"] = compare(
                str(previous), str(set_out / "per_image.csv"), metric="meanDic"
            )
    table = markdown(results, label)
    for r in results.values():
        if "paired_vs_against" in r:
            d = r["paired_vs_against"]
            table += (
                f"\n{r['name']}: meanDic minus {against}'s {d['difference']:+.4f} "
                f"[{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}] (paired, {d['images']} images)"
            )
    summary = {"scored": label, "test_sets": results}
    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=float) + "\n")
    with atomic_path(out / "results.md") as tmp:
        tmp.write_text(table)
    with atomic_path(out / "results.csv") as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["test_set", "metric", "value", "ci_low", "ci_high"])
        for key, r in results.items():
            for metric, v in r.items():
                if isinstance(v, dict) and "value" in v:
                    writer.writerow([key, metric, v["value"], *v["ci95"]])
                elif metric in ("share", "frames_with_polyp"):
                    writer.writerow([key, metric, v, "", ""])
    if mlflow_log:
        _log_to_mlflow(summary, out)
    print(table)
    return summary


def _log_to_mlflow(summary: dict, out: Path) -> None:
    import mlflow

    mlflow.set_experiment("polypseg-benchmark")
    with mlflow.start_run(run_name=f"benchmark {summary['scored']}"[:250]):
        for key, r in summary["test_sets"].items():
            metrics = {
                f"{_slug(key)}/{m}": v["value"] if isinstance(v, dict) else v
                for m, v in r.items()
                if (isinstance(v, dict) and "value" in v) or m == "share"
            }
            mlflow.log_metrics(metrics)
        for name in ("results.json", "results.md", "results.csv"):
            mlflow.log_artifact(str(out / name))


__all__ = ["TestSet", "benchmark", "read_test_sets"]
