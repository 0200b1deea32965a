"""The LightningModule's inference behaviour: TTA, threshold buffer, normalisation inside the graph."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from polypseg.models.module import PolypSegModule
from polypseg.models.networks import SegmentationNetwork

pytestmark = pytest.mark.data  # reads images from ../shared/data


def small(**kwargs) -> PolypSegModule:
    torch.manual_seed(0)
    net = SegmentationNetwork(decoder_channels=(16, 8, 8, 8, 8))
    return PolypSegModule(network=net, image_size=64, channels_last=False, **kwargs).eval()


def test_tta_keeps_shape_and_sample_order(resized_real_images):
    module = small(tta=True)
    images = torch.stack(
        [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im, _ in resized_real_images[:3]]
    )
    with torch.no_grad():
        merged = module.predict_logits(images)
        flips = [(), (-1,), (-2,), (-2, -1)]  # ttach flip_transform: identity, h, v, h+v
        manual = torch.stack(
            [module(images.flip(f)).flip(f) if f else module(images) for f in flips]
        ).mean(0)
        single = torch.cat([module.predict_logits(images[i : i + 1]) for i in range(3)])
    assert merged.shape == (3, 1, 64, 64)
    torch.testing.assert_close(merged, manual, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(merged, single, atol=1e-4, rtol=1e-3)  # order preserved per sample


def test_d4_tta_averages_the_eight_rotations_and_mirrors(resized_real_images):
    module = small(tta="d4")
    images = torch.stack(
        [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im, _ in resized_real_images[:2]]
    )
    views = [(k, m) for k in range(4) for m in (False, True)]

    def view(x, k, mirror):
        return torch.rot90(x.flip(-1) if mirror else x, k, (-2, -1))

    def unview(y, k, mirror):
        y = torch.rot90(y, -k, (-2, -1))
        return y.flip(-1) if mirror else y

    with torch.no_grad():
        merged = module.predict_logits(images)
        manual = torch.stack([unview(module(view(images, k, m)), k, m) for k, m in views]).mean(0)
        module.tta = "flips"
        flips = module.predict_logits(images)
    torch.testing.assert_close(merged, manual, atol=1e-4, rtol=1e-3)
    assert (merged - flips).abs().max() > 1e-4  # the rotations add views the flips do not have


@pytest.mark.parametrize("bad", ["d8", "yes", 4])
def test_tta_rejects_unknown_modes_by_name(bad):
    with pytest.raises(ValueError, match=r"tta: expected true, false or one of \('flips', 'd4'\)"):
        small(tta=bad)


def test_threshold_is_checkpointed_state():
    module = small(threshold=0.35)
    assert float(module.state_dict()["threshold"]) == pytest.approx(0.35)
    assert module.processing.threshold == pytest.approx(0.35)


def test_normalisation_is_inside_the_exported_network():
    module = small(mean=(0.2, 0.3, 0.4), std=(0.5, 0.6, 0.7))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = torch.sigmoid(
            module.network(
                (x - torch.tensor([0.2, 0.3, 0.4]).view(1, 3, 1, 1))
                / torch.tensor([0.5, 0.6, 0.7]).view(1, 3, 1, 1)
            )
        )
        torch.testing.assert_close(module.inference_network()(x), expected)


def test_old_checkpoint_without_cleanup_buffers_loads(tmp_path):
    module = small(threshold=0.4)
    checkpoint = {
        "state_dict": {
            k: v for k, v in module.state_dict().items() if k not in ("min_component", "fill_holes")
        }
    }
    fresh = small()
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    assert (
        fresh.processing.threshold == pytest.approx(0.4) and fresh.processing.min_component == 0.0
    )


def test_encoder_lr_scale_gives_the_encoder_its_own_learning_rate():
    def optimizer(params):
        return torch.optim.AdamW(params, lr=1e-3)

    def scheduler(opt):
        return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)

    module = small(encoder_lr_scale=0.1, optimizer=optimizer, scheduler=scheduler)
    config = module.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]
    encoder = {id(p) for p in module.network.model.encoder.parameters()}
    first, second = opt.param_groups
    assert {id(p) for p in first["params"]} == encoder
    assert len(first["params"]) + len(second["params"]) == len(list(module.parameters()))
    assert (first["lr"], second["lr"]) == pytest.approx((1e-4, 1e-3))
    assert sched.base_lrs == pytest.approx([1e-4, 1e-3])  # the schedule keeps the ratio
    one_group = small(optimizer=optimizer, scheduler=scheduler).configure_optimizers()
    assert [g["lr"] for g in one_group["optimizer"].param_groups] == pytest.approx([1e-3])
    with pytest.raises(ValueError, match="encoder_lr_scale"):
        small(encoder_lr_scale=0)
    no_encoder = PolypSegModule(network=torch.nn.Conv2d(3, 1, 3), encoder_lr_scale=0.5)
    with pytest.raises(ValueError, match=r"encoder_lr_scale=0.5 needs .* Conv2d has none"):
        no_encoder.configure_optimizers()


def deeply_supervised(loss) -> PolypSegModule:
    torch.manual_seed(0)
    net = SegmentationNetwork(decoder_channels=(16, 8, 8, 8, 8), deep_supervision=2)
    return PolypSegModule(network=net, loss=loss, image_size=64, channels_last=False)


def real_batch(resized_real_images, n: int = 4) -> dict:
    pairs = resized_real_images[:n]
    return {
        "image": torch.stack(
            [torch.from_numpy(im).permute(2, 0, 1).float() / 255 for im, _ in pairs]
        ),
        "mask": torch.stack([torch.from_numpy(m).float()[None] for _, m in pairs]),
    }


def test_deep_supervision_trains_every_head_and_exports_only_final_logits(
    resized_real_images, tmp_path
):
    from monai.losses import DeepSupervisionLoss

    from polypseg.export.onnx import export_onnx
    from polypseg.models.losses import StructureLoss

    module = deeply_supervised(DeepSupervisionLoss(StructureLoss())).train()
    batch = real_batch(resized_real_images)
    outputs = module(batch["image"])
    assert [tuple(o.shape[-2:]) for o in outputs] == [(64, 64), (32, 32), (16, 16)]
    loss = module.training_step(batch, 0)
    loss.backward()
    assert all(float(p.grad.abs().sum()) > 0 for p in module.network.aux_heads.parameters())
    # the exact MONAI sum: 1 x final + 0.5 x 1/2-res head + 0.25 x 1/4-res head, targets downsized
    expected = sum(
        w * StructureLoss()(o, F.interpolate(batch["mask"], o.shape[-2:], mode="nearest-exact"))
        for w, o in zip((1.0, 0.5, 0.25), module(batch["image"]), strict=True)
    )
    torch.testing.assert_close(loss, expected)

    # the smp model keeps its state-dict keys: plain checkpoints and exports are unaffected
    plain = SegmentationNetwork(decoder_channels=(16, 8, 8, 8, 8))
    assert module.network.model.state_dict().keys() == plain.model.state_dict().keys()
    module.eval()
    assert module(batch["image"]).shape == (4, 1, 64, 64)
    images = [im for im, _ in resized_real_images[:2]]
    report = export_onnx(module, tmp_path / "ds.onnx", images)
    assert report.max_abs_diff < 1e-3 and report.mask_dice > 0.99


def test_deep_supervision_without_its_loss_says_how_to_wrap_it(resized_real_images):
    from polypseg.models.losses import StructureLoss

    module = deeply_supervised(StructureLoss()).train()
    with pytest.raises(TypeError, match=r"returns 3 outputs .* monai.losses.DeepSupervisionLoss"):
        module.training_step(real_batch(resized_real_images), 0)


@pytest.mark.parametrize(
    ("kwargs", "rule"),
    [
        ({"deep_supervision": 5}, r"deep_supervision=5: Unet's decoder has 5 blocks: use 0..4"),
        (
            {"arch": "FPN", "decoder_channels": None, "deep_supervision": 1},
            r"FPN has no U-Net-style list of decoder blocks: use 0",
        ),
    ],
)
def test_deep_supervision_levels_are_checked(kwargs, rule):
    with pytest.raises(ValueError, match=rule):
        SegmentationNetwork(encoder_weights=None, **kwargs)


def test_distillation_adds_the_teachers_maps_and_keeps_the_teacher_out_of_the_state(
    resized_real_images,
):
    from polypseg.models.distillation import Teacher
    from polypseg.models.losses import StructureLoss

    twin = small()  # the same seed: the student's own initial weights, frozen
    student = small(loss=StructureLoss(), teacher="teacher.ckpt", distill_weight=0.5).train()
    student.teacher = Teacher(twin)
    batch = real_batch(resized_real_images)
    loss = student.training_step(batch, 0)
    logits = student(batch["image"])
    with torch.no_grad():
        target = torch.sigmoid(twin(batch["image"]))  # the teacher in eval mode, one view
    expected = StructureLoss()(logits, batch["mask"]) + 0.5 * F.binary_cross_entropy_with_logits(
        logits, target
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(p.grad is None for p in twin.parameters())  # frozen
    assert not [k for k in student.state_dict() if "teacher" in k]  # not saved, not exported
    assert student.hparams.teacher == "teacher.ckpt"

    # a 64 px teacher sees a 32 px student's batch at 64 px; its map comes back at 32 px
    small_batch = F.interpolate(batch["image"], size=32, mode="bilinear", align_corners=False)
    with torch.no_grad():
        seen = F.interpolate(small_batch, size=64, mode="bilinear", align_corners=False)
        manual = torch.sigmoid(F.interpolate(twin(seen), size=32, mode="bilinear"))
    torch.testing.assert_close(student.teacher.probabilities(small_batch, student_size=32), manual)
    with pytest.raises(ValueError, match="distill_weight must be >= 0"):
        small(distill_weight=-1)
