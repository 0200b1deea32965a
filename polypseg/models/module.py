"""The LightningModule: network + loss + metrics + optimiser, configured entirely by ``__init__``."""

from __future__ import annotations

import warnings

import lightning as L
import numpy as np
import torch
import ttach
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric

from polypseg.models.distillation import Teacher, distillation_loss
from polypseg.models.losses import DiceBCELoss
from polypseg.models.networks import Normalize, SegmentationNetwork
from polypseg.models.schedules import warmup_cosine
from polypseg.runtime.metrics import image_scores, overlap_scores
from polypseg.runtime.processing import Processing, postprocess
from polypseg.runtime.tta import TTA, TTACH, tta_mode

NETWORK_IGNORED = ("encoder_weights",)
"""Network settings a checkpoint may differ in: its weights replace the initial ones anyway."""


def _network_config(network) -> dict | None:
    if not isinstance(network, dict):
        return None
    args = {k: v for k, v in network.get("init_args", {}).items() if k not in NETWORK_IGNORED}
    return {"class_path": network.get("class_path"), **args}


def check_compatible(saved: dict, current) -> None:
    """Raise naming both values when the checkpoint's image size or network config differs."""
    problems = []
    if (
        "image_size" in saved
        and "image_size" in current
        and (int(saved["image_size"]) != int(current["image_size"]))
    ):
        problems.append(
            f"image_size: checkpoint {saved['image_size']}, config {current['image_size']}"
        )
    ours, theirs = _network_config(current.get("network")), _network_config(saved.get("network"))
    if ours and theirs and ours != theirs:
        keys = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        problems += [
            f"network.{k}: checkpoint {theirs.get(k)!r}, config {ours.get(k)!r}" for k in keys
        ]
    if problems:
        raise ValueError(
            "the checkpoint was trained with other settings than this config: "
            + "; ".join(problems)
            + ". Use the config it was trained with (or pass the checkpoint's values)"
        )


class InferenceNetwork(nn.Module):
    """What gets exported: RGB in [0, 1] (N,3,S,S) -> polyp probability (N,1,S,S)."""

    def __init__(self, normalize: Normalize, network: nn.Module):
        super().__init__()
        self.normalize, self.network = normalize, network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.network(self.normalize(x)))


class PolypSegModule(L.LightningModule):
    """Binary polyp segmentation.

    Args:
        network: any ``nn.Module`` mapping normalised images to logits (default: U-Net,
            EfficientNet-Lite0 encoder with offline ImageNet weights, decoder (128,64,32,16,8)).
        loss: ``(logits, target) -> loss`` module (default: BCE + soft Dice).
        mean, std: input normalisation; must match the encoder's pretrained weights
            (0.5/0.5 for EfficientNet-Lite, ImageNet statistics for torchvision/hub weights).
        threshold: probability above which a pixel is polyp; tuned on val and stored in the checkpoint.
        min_component, fill_holes: optional mask clean-up (drop components smaller than this
            fraction of the image; fill holes), chosen on val by ``polypseg tune-threshold``.
        image_size: side the network sees (kept here so checkpoints know how to preprocess).
        optimizer: optimizer factory (LightningCLI ``--optimizer``); default AdamW(lr=1e-3, wd=1e-4).
        scheduler: LR scheduler factory stepped per epoch; ``None`` = warm-up + cosine per step
            over the whole run.
        warmup_steps: warm-up length of the default schedule.
        encoder_lr_scale: the pretrained encoder's learning rate as a fraction of the optimizer's
            (discriminative fine-tuning, as fastai/MONAI users do: < 1 keeps more of the ImageNet
            features); 1.0 = one learning rate for everything.
        teacher: a polypseg checkpoint (e.g. ``models/polypseg.ckpt``) whose probability maps the
            network also learns (knowledge distillation: a fast network learns from a stronger
            one); read weights-only when fitting starts, never saved with this module.
        distill_weight: weight of the distillation term (BCE of the logits against the teacher's
            probabilities, logged as ``train/distill``) added to ``loss``.
        init_weights: a polypseg checkpoint (e.g. ``models/polypseg.ckpt``) whose network weights
            start the fit instead of the encoder's ImageNet weights: fine-tuning a trained model
            on your own frames or at another ``image_size``. Read weights-only when fitting
            starts; ``--ckpt_path`` (resume) still wins. Threshold and clean-up are not copied:
            tune them again on val.
        tta: average views of each image at validation/test/predict time (ttach): ``true`` or
            ``flips`` the four flips, ``d4`` the eight rotations and mirrors.
        channels_last: NHWC memory format; about 10% faster convolutions on CPU.

    Example:
        From YAML (``polypseg fit --config configs/unet.yaml``), or in Python:

        >>> import torch
        >>> from polypseg.models.networks import SegmentationNetwork
        >>> module = PolypSegModule(SegmentationNetwork(encoder_weights=None), image_size=64)
        >>> module.predict_logits(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 1, 64, 64])
    """

    def __init__(
        self,
        network: nn.Module | None = None,
        loss: nn.Module | None = None,
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        threshold: float = 0.5,
        min_component: float = 0.0,
        fill_holes: bool = False,
        image_size: int = 256,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        warmup_steps: int = 30,
        encoder_lr_scale: float = 1.0,
        teacher: str | None = None,
        distill_weight: float = 1.0,
        init_weights: str | None = None,
        tta: TTA = False,
        channels_last: bool = True,
    ):
        super().__init__()
        self._save_config()
        self.network = network if network is not None else SegmentationNetwork()
        self.loss = loss if loss is not None else DiceBCELoss()
        self.normalize = Normalize(mean, std)
        # buffers, not hparams: `--ckpt_path` restores them even when the module is built from YAML
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        self.register_buffer("min_component", torch.tensor(float(min_component)))
        self.register_buffer("fill_holes", torch.tensor(bool(fill_holes)))
        self.image_size, self.tta, self.channels_last = image_size, tta_mode(tta), channels_last
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.warmup_steps = warmup_steps
        if encoder_lr_scale <= 0:
            raise ValueError(f"model.encoder_lr_scale must be > 0, got {encoder_lr_scale}")
        self.encoder_lr_scale = encoder_lr_scale
        if distill_weight < 0:
            raise ValueError(f"model.distill_weight must be >= 0, got {distill_weight}")
        # a plain attribute, not a submodule: the teacher stays out of state_dict and exports
        self.teacher_path, self.distill_weight = teacher, distill_weight
        self.teacher: Teacher | None = None
        self.init_weights = init_weights
        self.mean_metrics = nn.ModuleDict(
            {f"{stage}_{name}": MeanMetric() for stage in ("train",) for name in ("dice", "iou")}
        )
        self.test_records: list[dict] = []
        self.val_records: list[dict] = []
        if channels_last:
            self.to(memory_format=torch.channels_last)

    # --- inference -----------------------------------------------------------------------
    def _save_config(self) -> None:
        """Save the hyper-parameters that rebuild this module. From LightningCLI they are the YAML
        (``class_path`` dicts), so ``load_from_checkpoint`` can rebuild the network; objects passed
        from Python are saved as weights only (dropped from hparams, never pickled). ``tta`` is
        chosen at evaluation time, so a checkpoint never overrides ``--model.tta``."""
        with warnings.catch_warnings():  # Lightning warns about the objects dropped just below
            warnings.filterwarnings("ignore", message="Attribute '(network|loss)' is an instance")
            self.save_hyperparameters(ignore=["tta"])
        for name in ("network", "loss"):
            if isinstance(self.hparams.get(name), nn.Module):
                del self.hparams[name]

    @property
    def processing(self) -> Processing:
        return Processing(
            size=self.image_size,
            mean=tuple(self.hparams.mean),
            std=tuple(self.hparams.std),
            threshold=round(float(self.threshold), 4),
            min_component=round(float(self.min_component), 6),
            fill_holes=bool(self.fill_holes),
        )

    def inference_network(self) -> InferenceNetwork:
        return InferenceNetwork(self.normalize, self.network).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Logits for images in [0, 1] (while training with deep supervision: a list, final first)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.network(self.normalize(x))

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        mode = tta_mode(self.tta)  # re-read: callers may switch `module.tta` after construction
        if mode is None:
            return self(x)
        views = getattr(ttach.aliases, TTACH[mode])()
        return ttach.SegmentationTTAWrapper(self, views, merge_mode="mean")(x)

    # --- steps ---------------------------------------------------------------------------
    def _shared_step(self, batch: dict, stage: str) -> torch.Tensor:
        outputs = self(batch["image"]) if stage == "train" else self.predict_logits(batch["image"])
        if isinstance(outputs, (list, tuple)):  # deep supervision: final logits first
            self._check_deep_supervision_loss(len(outputs))
            logits = outputs[0]
        else:
            logits = outputs
        loss = self.loss(outputs, batch["mask"])
        if stage == "train" and self.teacher is not None:
            target = self.teacher.probabilities(batch["image"], self.image_size)
            distill = distillation_loss(logits, target)
            self.log("train/distill", distill, on_step=False, on_epoch=True, batch_size=len(logits))
            loss = loss + self.distill_weight * distill
        scores = overlap_scores(
            logits.detach() > torch.logit(self.threshold), batch["mask"], ("dice", "iou")
        )
        batch_size = len(batch["image"])
        if stage == "val":  # per image, so DDP's padding can be removed at epoch end
            self.val_records += [
                {"index": int(i), "dice": float(d), "iou": float(u)}
                for i, d, u in zip(batch["index"], scores["dice"], scores["iou"], strict=True)
            ]
        for name in ("dice", "iou") if stage == "train" else ():
            metric = self.mean_metrics[f"{stage}_{name}"]
            metric.update(scores[name])
            self.log(
                f"{stage}/{name}",
                metric,
                on_step=False,
                on_epoch=True,
                prog_bar=name == "dice",
                batch_size=batch_size,
            )
        self.log(
            f"{stage}/loss",
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=stage == "train",
            batch_size=batch_size,
        )
        return loss

    def _check_deep_supervision_loss(self, levels: int) -> None:
        from monai.losses import DeepSupervisionLoss  # only here: monai adds seconds to start-up

        if not isinstance(self.loss, DeepSupervisionLoss):
            raise TypeError(
                f"model.network returns {levels} outputs while training (deep_supervision) but "
                f"model.loss is {type(self.loss).__name__}, which takes one: wrap it as "
                "model.loss: {class_path: monai.losses.DeepSupervisionLoss, init_args: {loss: …}} "
                "(configs/deep_supervision.yaml)"
            )

    def setup(self, stage: str) -> None:
        """Fill the network from ``init_weights`` before a fit. Lightning restores ``--ckpt_path``
        after this hook, so a resumed run keeps its own weights."""
        if stage == "fit" and self.init_weights:
            from polypseg.models.checkpoints import network_weights

            network_weights(self.init_weights, self.network)

    def on_fit_start(self) -> None:
        """Load the teacher only to train: a checkpoint of this module rebuilds (tune, export,
        serve) without the teacher's file."""
        if self.teacher_path and self.teacher is None:
            self.teacher = Teacher.from_checkpoint(self.teacher_path)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def on_validation_epoch_start(self) -> None:
        self.val_records = []

    def on_validation_epoch_end(self) -> None:
        """Per-image val means over every rank's images, each counted once (DDP pads)."""
        self._log_means("val", self.all_ranks_by_index(self.val_records))

    def _log_means(self, split: str, records: list[dict]) -> None:
        """Per-image means of ``<split>/dice`` and ``iou`` over ``records``, and
        ``<split>/<name>/<source>`` for each source of a multi-source DataModule."""
        groups = {"": records}
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer else None
        frame = datamodule.frame(split) if hasattr(datamodule, "frame") else None
        if frame is not None and "source" in frame:
            for record in records:
                source = frame.source.iloc[record["index"]]
                groups.setdefault(f"/{source}", []).append(record)
        for suffix, group in sorted(groups.items()):
            for name in ("dice", "iou"):
                value = float(np.mean([r[name] for r in group])) if group else float("nan")
                self.log(
                    f"{split}/{name}{suffix}",
                    value,
                    prog_bar=split == "val" and name == "dice" and not suffix,
                    batch_size=max(1, len(group)),
                )

    def all_ranks_by_index(self, records: list[dict]) -> list[dict]:
        """``records`` of every rank, one per dataset index (the distributed sampler's padding
        repeats images), in dataset order; a collective under DDP: every rank calls it."""
        if self._trainer is not None and self.trainer.world_size > 1:
            parts: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(parts, records)
            records = [r for part in parts for r in part]
        unique = {}
        for record in records:
            unique.setdefault(record["index"], record)
        return [unique[i] for i in sorted(unique)]

    def on_test_epoch_start(self) -> None:
        self.test_records, self._records_gathered = [], False

    def gather_test_records(self) -> list[dict]:
        """Every rank's per-image test records, the distributed sampler's padding (repeated
        images) removed, in dataset order; a collective under DDP: every rank calls it."""
        if not getattr(self, "_records_gathered", False):
            self.test_records = self.all_ranks_by_index(self.test_records)
            self._records_gathered = True
        return self.test_records

    def on_test_epoch_end(self) -> None:
        """Per-image means over the whole test split (the report's numbers, on every rank)."""
        self._log_means("test", self.gather_test_records())

    def test_step(self, batch: dict, batch_idx: int) -> None:
        """Scores at 256 px and at the original resolution (probabilities resized, then thresholded)."""
        prob = torch.sigmoid(self.predict_logits(batch["image"]))[:, 0].float().cpu().numpy()
        processing = self.processing
        low_res = overlap_scores(prob > processing.threshold, batch["mask"].cpu().numpy())
        records = []
        for i, original in enumerate(batch["original_mask"]):
            pred = postprocess(prob[i], *original.shape, processing)
            record = {
                "index": int(batch["index"][i]),
                **image_scores(pred, np.asarray(original)),
            }
            record.update({f"{k}_{self.image_size}px": float(v[i]) for k, v in low_res.items()})
            record["predicted_fraction"] = float(pred.mean())
            record["probability"] = prob[i].astype(np.float16)  # for the worst-case gallery
            records.append(record)
        self.test_records.extend(records)  # means are logged from all of them at epoch end

    def predict_step(self, batch: dict, batch_idx: int) -> dict:
        prob = torch.sigmoid(self.predict_logits(batch["image"]))[:, 0]
        return {"index": batch["index"].cpu(), "probability": prob.float().cpu()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Refuse a checkpoint trained for another input size or network than this config builds
        (a 64 px model scored at 256 px loads without error and scores nonsense); checkpoints from
        before a post-processing buffer existed load with its default."""
        check_compatible(checkpoint.get("hyper_parameters", {}), self.hparams)
        state = checkpoint["state_dict"]
        for name in ("threshold", "min_component", "fill_holes"):
            state.setdefault(name, getattr(self, name))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record the MLflow run, so `--ckpt_path` resumes log into the same run."""
        run_id = getattr(self.logger, "run_id", None) if self._trainer is not None else None
        if run_id:
            checkpoint["mlflow_run_id"] = run_id

    # --- optimisation --------------------------------------------------------------------
    def parameter_groups(self) -> list[dict]:
        """Trainable parameters, the encoder's in a group of its own when ``encoder_lr_scale != 1``
        (its ``lr_scale`` multiplies the optimizer's learning rate once it is built)."""
        if self.encoder_lr_scale == 1.0:
            return [{"params": [p for p in self.parameters() if p.requires_grad]}]
        encoder = getattr(getattr(self.network, "model", self.network), "encoder", None)
        if encoder is None:
            raise ValueError(
                f"model.encoder_lr_scale={self.encoder_lr_scale} needs a network with an `encoder` "
                f"(smp models have one); {type(self.network).__name__} has none"
            )
        inside = {id(p) for p in encoder.parameters()}
        groups = [
            [p for p in self.parameters() if p.requires_grad and id(p) in inside],
            [p for p in self.parameters() if p.requires_grad and id(p) not in inside],
        ]
        return [
            {"params": groups[0], "lr_scale": self.encoder_lr_scale},
            {"params": groups[1], "lr_scale": 1.0},
        ]

    def configure_optimizers(self):
        params = self.parameter_groups()
        if self.optimizer_factory is None:
            optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
        else:
            optimizer = self.optimizer_factory(params)
        for group in optimizer.param_groups:  # schedulers read initial_lr/lr after this
            group["lr"] *= group.get("lr_scale", 1.0)
        if self.scheduler_factory is not None:
            return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}
        total = int(self.trainer.estimated_stepping_batches)
        schedule = warmup_cosine(optimizer, total, min(self.warmup_steps, max(1, total // 10)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
