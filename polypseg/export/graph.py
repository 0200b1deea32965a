"""Passes over an exported ONNX graph: make fixed sizes constants, find size arithmetic, store
weights as float16.

The exported graph has a dynamic batch axis and a fixed image size. The TorchScript exporter still
computes size-dependent values at run time from ``Shape`` (timm's TF-"same" padding of
``tf_efficientnet_*`` encoders, smp's decoder upsampling to the skip's size), and a ``Shape`` of a
tensor with a symbolic batch axis is something ONNX Runtime cannot constant-fold. Freezing those
values lets the pads move into the convolutions (``Conv`` takes asymmetric ``pads``) and makes the
upsampling a constant-scale ``Resize``: about 20 % less latency for the shipped model on 2 CPU
cores, outputs bit-identical, and no float size arithmetic left for int8 quantization to break.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

# inputs that carry sizes, not activations: (op type, input indices)
_SIZE_INPUTS = {
    "Pad": (1,),
    "Resize": (1, 2, 3),
    "Reshape": (1,),
    "Expand": (1,),
    "Slice": (1, 2, 3, 4),
}
# the weight input of the ops that hold nearly all of a CNN's parameters
_WEIGHT_INPUT = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}


def size_arithmetic_nodes(graph: onnx.GraphProto) -> list[str]:
    """Nodes that compute pad amounts or shapes from ``Shape`` (e.g. timm's TF-style "same"
    padding, which rounds the input size in float ops).

    QDQ quantization would quantize that float arithmetic like an activation and pad by wrong
    amounts (the cause of a 0.06+ Dice drop), so these nodes stay exact.
    """
    producer = {out: node for node in graph.node for out in node.output}
    todo = [
        node.input[i]
        for node in graph.node
        for i in _SIZE_INPUTS.get(node.op_type, ())
        if i < len(node.input) and node.input[i]
    ]
    found: dict[str, None] = {}
    while todo:
        node = producer.get(todo.pop())
        if node is None or node.name in found:
            continue
        found[node.name] = None
        if node.op_type != "Shape":  # a Shape's input is the activation itself: stop there
            todo.extend(node.input)
    return list(found)


def _values(model: onnx.ModelProto, names: list[str], batch: int) -> dict[str, np.ndarray]:
    """The named intermediate tensors for a zero input of ``batch`` images."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(
        helper.make_empty_tensor_value_info(n) for n in names if n not in outputs
    )
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        probe.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    image = session.get_inputs()[0]
    shape = [batch, *image.shape[1:]]
    values = session.run(names, {image.name: np.zeros(shape, np.float32)})
    return dict(zip(names, values, strict=True))


def _is_zero_padding_of_spatial_axes(pads: np.ndarray, value: np.ndarray | None) -> bool:
    half = len(pads) // 2
    return (
        len(pads) == 8
        and not pads[:2].any()
        and not pads[half : half + 2].any()
        and (pads >= 0).all()
        and (value is None or float(value) == 0.0)
    )


def _fold_pad(pad: onnx.NodeProto, amounts: np.ndarray, convs: list[onnx.NodeProto]) -> None:
    """Move a zero ``Pad`` of H/W into its consumer convolutions' ``pads`` ([top, left, bottom,
    right]) and route the convolutions to the unpadded input."""
    extra = [int(amounts[2]), int(amounts[3]), int(amounts[6]), int(amounts[7])]
    for conv in convs:
        current = next((a for a in conv.attribute if a.name == "pads"), None)
        pads = list(current.ints) if current is not None else [0, 0, 0, 0]
        if current is not None:
            conv.attribute.remove(current)
        conv.attribute.append(
            helper.make_attribute("pads", [p + e for p, e in zip(pads, extra, strict=True)])
        )
        conv.input[0] = pad.input[0]


def _prune(graph: onnx.GraphProto) -> None:
    """Drop nodes, initializers and value infos nothing reaches the outputs through."""
    needed = {o.name for o in graph.output}
    live = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            live.append(node)
            needed.update(node.input)
    keep = {id(n) for n in live}
    for node in [n for n in graph.node if id(n) not in keep]:
        graph.node.remove(node)
    for init in [i for i in graph.initializer if i.name not in needed]:
        graph.initializer.remove(init)
    for info in [v for v in graph.value_info if v.name not in needed]:
        graph.value_info.remove(info)


def freeze_spatial_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace ``Pad`` amounts and ``Resize`` sizes computed from ``Shape`` by constants, in place.

    Only values that are the same for a batch of 1 and of 2 are frozen, so the batch axis stays
    dynamic; zero pads of H/W that feed only convolutions are folded into them; a ``Resize`` to a
    size computed at run time becomes a constant integer ``scales`` resize. Graphs without a fixed
    image size are returned unchanged.
    """
    graph = model.graph
    dims = graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4 or not all(d.HasField("dim_value") for d in dims[1:]):
        return model
    constants = {i.name for i in graph.initializer}
    pads = [n for n in graph.node if n.op_type == "Pad" and n.input[1] not in constants]
    resizes = [n for n in graph.node if n.op_type == "Resize" and len(n.input) == 4 and n.input[3]]
    if not pads and not resizes:
        return model
    names = {n.input[1] for n in pads} | {
        n.input[2] for n in pads if len(n.input) > 2 and n.input[2]
    }
    names |= {n.input[k] for n in resizes for k in (0, 3)}
    one, two = _values(model, sorted(names), 1), _values(model, sorted(names), 2)
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    for pad in pads:
        amounts = one[pad.input[1]]
        if not np.array_equal(amounts, two[pad.input[1]]):
            continue
        value = one.get(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else None
        mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
        users = consumers.get(pad.output[0], [])
        if (
            mode == b"constant"
            and _is_zero_padding_of_spatial_axes(amounts, value)
            and users
            and all(u.op_type == "Conv" for u in users)
            and all(
                a.s in (b"", b"NOTSET") for u in users for a in u.attribute if a.name == "auto_pad"
            )
        ):
            _fold_pad(pad, amounts, users)
        else:
            constant = f"{pad.name}/frozen_pads"
            graph.initializer.append(numpy_helper.from_array(amounts.astype(np.int64), constant))
            pad.input[1] = constant

    for resize in resizes:
        source, size = np.array(one[resize.input[0]].shape), one[resize.input[3]]
        same_size = np.array_equal(size[2:], two[resize.input[3]][2:])
        if not same_size or not np.array_equal(size[:2], source[:2]) or (size % source).any():
            continue  # only exact integer upsampling: a float scale may round to another size
        scales = (size // source).astype(np.float32)
        constant = f"{resize.name}/frozen_scales"
        graph.initializer.append(numpy_helper.from_array(scales, constant))
        del resize.input[3]
        resize.input[2] = constant

    _prune(graph)
    onnx.checker.check_model(model)
    return model


def store_weights_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose convolution/matmul weights are stored as float16, each read through a ``Cast``
    back to float32.

    ONNX Runtime folds the casts when it loads the model, so the file is half the size and the
    arithmetic stays float32: the same speed and the same scores on every CPU (int8's depend on
    the CPU's instructions: docs/benchmarks.md). Weights outside float16's range stay float32;
    biases, normalisation and size constants are left alone (they are small).
    """
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    graph = converted.graph
    uses: dict[str, list[tuple[str, int]]] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            uses.setdefault(name, []).append((node.op_type, index))
    inputs = {i.name for i in graph.input}
    limit = float(np.finfo(np.float16).max)
    casts = []
    for init in graph.initializer:
        consumers = uses.get(init.name, [])
        if (
            init.data_type != onnx.TensorProto.FLOAT
            or init.name in inputs
            or not consumers
            or any(_WEIGHT_INPUT.get(op) != index for op, index in consumers)
        ):
            continue
        value = numpy_helper.to_array(init)
        if not np.isfinite(value).all() or np.abs(value).max(initial=0) > limit:
            continue
        name, stored = init.name, f"{init.name}/fp16"
        init.CopyFrom(numpy_helper.from_array(value.astype(np.float16), stored))
        casts.append(
            helper.make_node(
                "Cast", [stored], [name], name=f"{name}/to_fp32", to=onnx.TensorProto.FLOAT
            )
        )
    nodes = casts + list(graph.node)  # a Cast must come before the nodes that read its output
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(converted)
    return converted
