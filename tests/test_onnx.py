"""ONNX export, metadata, parity, int8 and the shared inference path, on real images."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from polypseg.export.onnx import ExportError, export_onnx
from polypseg.export.quantize import quantize_int8, store_fp16
from polypseg.runtime.io import read_rgb
from polypseg.runtime.predictor import OnnxPredictor
from polypseg.runtime.processing import postprocess, preprocess, resize_probabilities

from conftest import KVASIR

pytestmark = pytest.mark.data  # reads images from ../shared/data


def test_single_file_with_metadata(tiny_onnx):
    assert not list(tiny_onnx.parent.glob("*.data"))  # no external-data sidecar
    model = onnx.load(str(tiny_onnx))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    predictor = OnnxPredictor(tiny_onnx)
    meta = predictor.metadata
    assert meta["processing"] == {
        "size": 64,
        "mean": [0.5] * 3,
        "std": [0.5] * 3,
        "threshold": 0.5,
        "class_names": ["background", "polyp"],
        "min_component": 0.0,
        "fill_holes": False,
    }
    assert (
        meta["polypseg_version"]
        and meta["git_sha"]
        and meta["config_digest"]
        and meta["opset"] == 17
    )
    assert meta["parity"]["max_abs_diff"] < 1e-4 and meta["parity"]["images"] == 4


def test_onnx_matches_torch_on_real_images_any_batch(tiny_onnx, tiny_module, resized_real_images):
    predictor = OnnxPredictor(tiny_onnx)
    batch = (
        np.stack([im for im, _ in resized_real_images[:5]]).transpose(0, 3, 1, 2).astype(np.float32)
        / 255
    )
    with torch.no_grad():
        expected = tiny_module.inference_network()(torch.from_numpy(batch))[:, 0].numpy()
    np.testing.assert_allclose(predictor.run(batch), expected, atol=1e-4)
    np.testing.assert_allclose(predictor.run(batch[:1]), expected[:1], atol=1e-4)


def test_prediction_at_original_resolution(tiny_onnx, tiny_module):
    image = read_rgb(sorted((KVASIR / "images").glob("*.jpg"))[0])
    prediction = OnnxPredictor(tiny_onnx).predict(image)
    assert prediction.mask.shape == prediction.probability.shape == image.shape[:2]
    with torch.no_grad():
        prob = tiny_module.inference_network()(
            torch.from_numpy(preprocess(image, tiny_module.processing))
        )[0, 0]
    expected = postprocess(prob.numpy(), *image.shape[:2], tiny_module.processing)
    assert (prediction.mask == expected).mean() > 0.999
    np.testing.assert_allclose(
        prediction.probability, resize_probabilities(prob.numpy(), *image.shape[:2]), atol=1e-4
    )


def test_failed_parity_writes_nothing_and_keeps_good_file(
    tiny_onnx, tiny_module, resized_real_images, tmp_path
):
    good = tmp_path / "model.onnx"
    good.write_bytes(tiny_onnx.read_bytes())
    with pytest.raises(ExportError, match="differ by"):
        export_onnx(tiny_module, good, [im for im, _ in resized_real_images[:2]], tolerance=0.0)
    assert good.read_bytes() == tiny_onnx.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_int8_quantization_and_refusal(tiny_onnx, resized_real_images, tmp_path):
    calibration = [im for im, _ in resized_real_images[:6]]
    validation = resized_real_images[6:]
    out = tmp_path / "model.int8.onnx"
    result = quantize_int8(tiny_onnx, out, calibration, validation, max_dice_drop=1.0)
    assert out.stat().st_size < tiny_onnx.stat().st_size * 0.6
    int8 = OnnxPredictor(out)
    assert int8.metadata["quantization"]["dice_drop"] == pytest.approx(result["dice_drop"])
    refused = tmp_path / "refused.int8.onnx"
    with pytest.raises(ExportError, match="int8 loses"):
        quantize_int8(tiny_onnx, refused, calibration, validation, max_dice_drop=-1.0)
    assert not refused.exists()


def test_fp16_weights_halve_the_file_and_keep_fp32_arithmetic(
    tiny_onnx, resized_real_images, tmp_path
):
    """Every Conv weight is stored float16 and read through a Cast to float32; biases and size
    constants stay float32; probabilities match the fp32 file; a refused file is not written."""
    out = tmp_path / "model.fp16.onnx"
    result = store_fp16(tiny_onnx, out, resized_real_images, max_dice_drop=0.01)
    assert abs(result["dice_drop"]) < 0.01 and out.stat().st_size < tiny_onnx.stat().st_size * 0.6
    graph = onnx.load(str(out)).graph
    produced_by = {o: n for n in graph.node for o in n.output}
    dtypes = {i.name: i.data_type for i in graph.initializer}
    for conv in (n for n in graph.node if n.op_type == "Conv"):
        cast = produced_by[conv.input[1]]
        assert cast.op_type == "Cast" and dtypes[cast.input[0]] == onnx.TensorProto.FLOAT16
    assert onnx.TensorProto.FLOAT16 not in {
        dtypes.get(i) for n in graph.node if n.op_type != "Cast" for i in n.input
    }
    fp16 = OnnxPredictor(out)
    assert fp16.metadata["quantization"]["dice_drop"] == pytest.approx(result["dice_drop"])
    assert fp16.metadata["processing"] == OnnxPredictor(tiny_onnx).metadata["processing"]
    batch = np.stack([im for im, _ in resized_real_images]).transpose(0, 3, 1, 2) / np.float32(255)
    difference = np.abs(fp16.run(batch) - OnnxPredictor(tiny_onnx).run(batch))
    assert difference.mean() < 2e-3 and difference.max() < 0.05  # float16 rounding, untrained net
    refused = tmp_path / "refused.fp16.onnx"
    with pytest.raises(ExportError, match="fp16 loses"):
        store_fp16(tiny_onnx, refused, resized_real_images, max_dice_drop=-1.0)
    assert not refused.exists()


def test_frozen_graph_pads_inside_convolutions_same_outputs(
    tiny_module, resized_real_images, tmp_path
):
    """timm's TF-"same" pads and smp's upsampling sizes are computed from `Shape` at run time;
    the export freezes them for its fixed image size: pads move into the Conv nodes, Resize gets
    constant scales, the batch axis stays dynamic and the outputs do not change."""
    from polypseg.export.onnx import export_graph
    from polypseg.runtime.processing import to_network_input

    net = tiny_module.inference_network()
    raw, frozen = tmp_path / "raw.onnx", tmp_path / "frozen.onnx"
    export_graph(net, raw, 64, freeze=False)
    export_graph(net, frozen, 64)
    before, after = (onnx.load(str(p)).graph for p in (raw, frozen))
    ops = {n.op_type for n in after.node}
    assert {"Pad", "Shape", "Ceil"} <= {n.op_type for n in before.node}
    assert not ops & {"Pad", "Shape", "Ceil", "Gather", "Cast"} and "Resize" in ops
    asymmetric = [
        n.name
        for n in after.node
        if n.op_type == "Conv"
        for a in n.attribute
        if a.name == "pads" and a.ints[:2] != a.ints[2:]
    ]
    assert len(asymmetric) == 5  # the stem and the four stride-2 depthwise convolutions
    assert len(after.node) < len(before.node) / 2
    for batch in (1, 3):
        images = to_network_input([im for im, _ in resized_real_images[:batch]])
        outputs = [
            ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(
                None, {"image": images}
            )[0]
            for p in (raw, frozen)
        ]
        np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-6)


def test_size_arithmetic_stays_exact_in_int8(tiny_module, resized_real_images, tmp_path):
    """In a graph that still computes pads from the input size in float ops (not frozen), those
    nodes must not be quantized, or the int8 model pads by wrong amounts."""
    from polypseg.export.graph import size_arithmetic_nodes
    from polypseg.export.onnx import build_metadata, export_graph, write_metadata

    raw = tmp_path / "raw.onnx"
    export_graph(tiny_module.inference_network(), raw, 64, freeze=False)
    write_metadata(raw, build_metadata(tiny_module))
    fp32_graph = onnx.load(str(raw)).graph
    sizes = set(size_arithmetic_nodes(fp32_graph))
    assert {"Shape", "Ceil"} <= {n.op_type for n in fp32_graph.node if n.name in sizes}
    assert not any(n.op_type == "Conv" for n in fp32_graph.node if n.name in sizes)
    out = tmp_path / "model.int8.onnx"
    calibration = [im for im, _ in resized_real_images[:4]]
    quantize_int8(raw, out, calibration, resized_real_images[4:], max_dice_drop=1.0)
    graph = onnx.load(str(out)).graph
    produced_by = {o: n.op_type for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type == "Pad":  # the pads input comes from exact arithmetic, never a DQ
            assert produced_by.get(node.input[1]) != "DequantizeLinear", node.name
    # a Shape may read a dequantized activation (its shape is exact), and a Clip's bounds may be a
    # shared constant that ORT quantized elsewhere (0 round-trips exactly): only the data counts
    quantized_size_nodes = [
        n.name
        for n in graph.node
        if n.name in sizes
        and n.op_type != "Shape"
        and any(
            produced_by.get(i) == "DequantizeLinear"
            for i in (n.input[:1] if n.op_type == "Clip" else n.input)
        )
    ]
    assert quantized_size_nodes == []


def test_int8_percentile_calibration_keeps_end_convolutions_fp32(
    tiny_onnx, resized_real_images, tmp_path
):
    import onnx

    calibration = [im for im, _ in resized_real_images[:6]]
    validation = resized_real_images[6:]
    out = tmp_path / "ends.int8.onnx"
    quantize_int8(
        tiny_onnx,
        out,
        calibration,
        validation,
        1.0,
        calibration_method="percentile",
        keep_ends=True,
    )
    graph = onnx.load(str(out)).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    produced_by = {o: n.op_type for n in graph.node for o in n.output}
    # an fp32 Conv reads its float weight straight, a quantized one through DequantizeLinear
    assert produced_by.get(convs[0].input[1]) != "DequantizeLinear"
    assert produced_by.get(convs[-1].input[1]) != "DequantizeLinear"
    assert produced_by.get(convs[1].input[1]) == "DequantizeLinear"
    quantization = OnnxPredictor(out).metadata["quantization"]
    assert quantization["calibration_method"] == "percentile"
    assert quantization["fp32_layers"] == "first and last Conv"
    with pytest.raises(ExportError, match="calibration_method 'histogram'"):
        quantize_int8(tiny_onnx, tmp_path / "x.onnx", calibration, validation, 1.0, "histogram")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("mode", [True, "d4"])
def test_onnx_tta_matches_the_pytorch_tta(tiny_module, tiny_onnx, resized_real_images, mode):
    """`OnnxPredictor(tta=...)` (evaluate/infer) averages the same views in logit space as the
    module's ttach TTA (`polypseg test --model.tta true|d4`): four flips, or the eight D4 views."""
    from polypseg.runtime.processing import to_network_input

    batch = to_network_input([im for im, _ in resized_real_images[:3]])
    plain = OnnxPredictor(tiny_onnx)
    tta = OnnxPredictor(tiny_onnx, tta=mode)
    tiny_module.tta = mode
    try:
        with torch.no_grad():
            expected = torch.sigmoid(tiny_module.predict_logits(torch.from_numpy(batch)))[:, 0]
    finally:
        tiny_module.tta = False
    got = tta.probabilities(batch)
    assert got.shape == (3, 64, 64)
    # ORT and torch convolve rotated inputs in different orders: a few 1e-4 differences
    np.testing.assert_allclose(got, expected.numpy(), atol=5e-4)
    assert np.abs(got - expected.numpy()).mean() < 1e-5
    assert np.abs(got - plain.probabilities(batch)).max() > 1e-3  # the views did something
    mask = tta.predict(resized_real_images[0][0]).mask
    assert mask.shape == resized_real_images[0][0].shape[:2]


def test_registry_model_downloads_into_a_private_folder_per_call(tiny_onnx, tmp_path, monkeypatch):
    """A ``models:/`` URI resolves through a sqlite registry; each lookup gets its own 0700 folder
    (never a shared, predictable one in /tmp that another user could plant a file in)."""
    from polypseg.export.registry import register_onnx
    from polypseg.runtime.model_files import locate_onnx

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)  # the registration run's artifacts land here
    uri = register_onnx(tiny_onnx, "polypseg-test", alias="champion")["uri"]
    first, second = locate_onnx(uri), locate_onnx(uri)
    assert first.read_bytes() == second.read_bytes() == tiny_onnx.read_bytes()
    assert first.parent != second.parent
    for path in (first, second):
        top = next(p for p in path.parents if p.name.startswith("polypseg-model-"))
        assert top.stat().st_mode & 0o777 == 0o700
    with pytest.raises(FileNotFoundError, match="not found in the MLflow registry"):
        locate_onnx("models:/polypseg-test@nobody")
