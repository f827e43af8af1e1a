"""Row-wise dynamic int8 for an ONNX graph: each token's activations get their own scale.

ONNX Runtime's own dynamic quantisation gives a whole input tensor one activation scale, so
one long or odd text in a batch changes the rounding of every other text in it: a post's
label could depend on what rode with it. Here every MatMul whose weight is a constant becomes

    a2    = a reshaped to (rows, k)                 one row per token
    scale = max(|a2|, axis=1) / 127                 computed at run time, per row
    q     = QuantizeLinear(a2, scale, 128, axis=0)  uint8, symmetric around 128
    y     = MatMulIntegerToFloat(q, W8, 1, w_scale, 128) * scale[:, None]

with ``W8`` the weight in int8 per output column and ``w_scale`` its column scales
(ONNX Runtime's ``MatMulIntegerToFloat`` applies them as it writes the product, which took
10% off the graph's time against ``MatMulInteger`` + ``DequantizeLinear`` + ``Mul``). The
integer product is exact and a row's scale depends on that row alone, so a text's result
does not depend on its batch or its padding; a per-token scale is also finer than one per
batch. Rows read by several MatMuls (the query, key and value projections read the same
hidden states) are quantised once.

On CPUs without VNNI, ONNX Runtime's u8 x s8 kernel adds pairs of products in int16, which
can saturate; ``weight_bits=7`` keeps every pair in range (ONNX Runtime's ``reduce_range``
remedy).

The FFN's down-projection reads GELU output, whose few large channels leave a per-row scale
too coarse for the rest. Given each input channel's peak on calibration texts, it is
*smoothed* first (SmoothQuant, Xiao et al. 2023): channel ``j`` of the activations is divided
by ``s_j = peak_j ** a / wpeak_j ** (1 - a)`` (``SMOOTH_ALPHA``) and row ``j`` of the weight
multiplied by it, which leaves the product unchanged and moves the outliers into the weight,
whose columns have their own scales. Without peaks the down-projection stays in fp32
(``KEEP_FP32_AFTER``). Measured on the bundled model (2-core AVX512-VNNI EPYC, 2,000 bench
tweets, one interleaved run): fused fp32 graph 266 texts/s, down-projection in fp32 369, all
MatMuls row-wise int8 469. Per-tensor weight scales, which would save the column multiply,
dropped label agreement with fp32 from 99.5% to 93% and gained 4% (AVX2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    import onnx

#: MatMuls with fewer output columns stay in fp32: the classifier head (a few labels) is
#: too little work to gain from int8, and its logits are what the scores are made of.
MIN_COLUMNS = 16

#: MatMuls that read the output of these ops are smoothed before int8, or stay in fp32 when
#: no activation peaks are given: the FFN's down-projection reads GELU activations, whose
#: few large channels leave a per-row int8 scale too coarse for the rest. Unsmoothed, on the
#: bundled model, this was the difference between macro-F1 0.8049 and 0.8090 on its test
#: split (fp32: 0.8086).
KEEP_FP32_AFTER = frozenset({"Gelu", "BiasGelu", "FastGelu"})

#: SmoothQuant's migration strength (0.5 splits the outliers evenly between activation and
#: weight). Chosen on the bundled model's validation split, by the mean probability change
#: from fp32 (0.2: 0.0065, 0.3: 0.0048, 0.4: 0.0061, 0.5: 0.0053; unsmoothed 0.0053).
SMOOTH_ALPHA = 0.3

#: Shared constants, added once to a rewritten graph.
_CONSTANTS = {
    "rowq_eps": np.array(1e-12, dtype=np.float32),
    "rowq_inv127": np.array(1.0 / 127.0, dtype=np.float32),
    "rowq_zero": np.array(0.0, dtype=np.float32),
    "rowq_one": np.array(1.0, dtype=np.float32),
    "rowq_128": np.array(128.0, dtype=np.float32),
    "rowq_zero_point": np.array(128, dtype=np.uint8),
    "rowq_start": np.array([0], dtype=np.int64),
    "rowq_last": np.array([-1], dtype=np.int64),
}


def quantize_rows(model: onnx.ModelProto, *, weight_bits: int = 8,
                  peaks: Mapping[str, np.ndarray] | None = None) -> tuple[onnx.ModelProto, int]:
    """Rewrite ``model`` in place: constant-weight MatMuls become row-wise int8.

    Args:
        model: a float32 graph (after fusion), opset 13 or later.
        weight_bits: 8, or 7 on CPUs whose int8 kernels saturate (no VNNI).
        peaks: per-channel peak ``|x|`` on calibration texts, by tensor name, for tensors
            read by MatMuls after ``KEEP_FP32_AFTER`` ops (see ``smoothed_inputs``); those
            MatMuls are smoothed and quantised. Without an entry they stay in fp32.

    Returns:
        ``(model, count)``: the same model and how many MatMuls were rewritten.

    Raises:
        ValueError: ``weight_bits`` is not 7 or 8.
    """
    from onnx import helper, numpy_helper

    if weight_bits not in (7, 8):
        raise ValueError(f"weight_bits must be 7 or 8, not {weight_bits}")
    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    producers = {output: node.op_type for node in graph.node for output in node.output}
    names = _Names({node.name for node in graph.node})
    nodes: list = []
    initializers: list = []
    quantised: dict[str, _Rows] = {}
    count = 0
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        array = numpy_helper.to_array(weight) if weight is not None else None
        source = node.input[0]
        outliers = producers.get(source) in KEEP_FP32_AFTER
        if not _worth_int8(array) or (outliers and source not in (peaks or {})):
            nodes.append(node)
            continue
        if outliers:
            source, array = _smooth(source, array, peaks[source], names, nodes, initializers)
        if source not in quantised:
            quantised[source] = _quantise_rows(source, array.shape[0], names, nodes,
                                               initializers)
        _integer_matmul(node, array, quantised[source], weight_bits, names, nodes,
                        initializers)
        uses[node.input[1]] -= 1
        count += 1
    if count:
        if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
            model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
        kept = [init for init in graph.initializer if uses.get(init.name, 0) > 0]
        constants = [numpy_helper.from_array(value, name) for name, value in _CONSTANTS.items()]
        del graph.initializer[:]
        graph.initializer.extend(kept + initializers + constants)
        del graph.node[:]
        graph.node.extend(nodes)
    return model, count


def smoothed_inputs(model: onnx.ModelProto) -> list[str]:
    """The tensors whose channel peaks ``quantize_rows`` needs: inputs of constant-weight
    MatMuls that read the output of a ``KEEP_FP32_AFTER`` op."""
    weights = {init.name for init in model.graph.initializer}
    producers = {output: node.op_type for node in model.graph.node for output in node.output}
    found: list[str] = []
    for node in model.graph.node:
        if (node.op_type == "MatMul" and node.input[1] in weights
                and producers.get(node.input[0]) in KEEP_FP32_AFTER
                and node.input[0] not in found):
            found.append(node.input[0])
    return found


def _smooth(source: str, weight: np.ndarray, peak: np.ndarray, names: _Names, nodes: list,
            initializers: list) -> tuple[str, np.ndarray]:
    """Divide ``source``'s channels by the smoothing factors; return it and the scaled weight."""
    from onnx import helper, numpy_helper

    if peak.shape != (weight.shape[0],):
        raise ValueError(f"peaks for {source}: {peak.shape} does not fit a weight of "
                         f"{weight.shape[0]} rows")
    weight_peak = np.maximum(np.abs(weight).max(axis=1), 1e-5)
    factor = np.clip(np.maximum(peak, 1e-5) ** SMOOTH_ALPHA
                     / weight_peak ** (1 - SMOOTH_ALPHA), 1e-5, 1e5).astype(np.float32)
    base = names.new(f"{source}_smooth")
    initializers.append(numpy_helper.from_array((1.0 / factor).astype(np.float32),
                                                f"{base}_inverse"))
    nodes.append(helper.make_node("Mul", [source, f"{base}_inverse"], [base], name=base))
    return base, (weight * factor[:, None]).astype(np.float32)


def _worth_int8(weight: np.ndarray | None) -> bool:
    """A constant fp32 matrix with enough columns to gain from int8."""
    return (weight is not None and weight.ndim == 2 and weight.dtype == np.float32
            and weight.shape[1] >= MIN_COLUMNS)


class _Rows(NamedTuple):
    """The names of one activation's quantised rows, their scales (shape ``(rows, 1)``) and
    its leading shape."""

    quantised: str
    scale: str
    lead: str


def _quantise_rows(source: str, inner: int, names: _Names, nodes: list,
                   initializers: list) -> _Rows:
    """Append the nodes that quantise ``source`` (shape ``(..., inner)``) row by row."""
    from onnx import TensorProto, helper, numpy_helper

    base = names.new(f"{source}_rowq")
    flat = numpy_helper.from_array(np.array([-1, inner], dtype=np.int64), f"{base}_flat")
    initializers.append(flat)

    def op(kind: str, inputs: list[str], output: str, **attributes: object) -> str:
        nodes.append(helper.make_node(kind, inputs, [f"{base}_{output}"],
                                      name=f"{base}_{output}", **attributes))
        return f"{base}_{output}"

    lead = op("Slice", [op("Shape", [source], "shape"), "rowq_start", "rowq_last"], "lead")
    rows = op("Reshape", [source, flat.name], "rows")
    peak = op("ReduceMax", [op("Abs", [rows], "abs")], "peak", axes=[-1], keepdims=0)
    scale = op("Mul", [op("Max", [peak, "rowq_eps"], "floor"), "rowq_inv127"], "scale")
    # QuantizeLinear's per-axis zero point must have the scale's shape: 128 for every row.
    zero_point = op("Cast", [op("Add", [op("Mul", [scale, "rowq_zero"], "zeros"), "rowq_128"],
                                "offsets")], "zero_point", to=TensorProto.UINT8)
    quantised = op("QuantizeLinear", [rows, scale, zero_point], "u8", axis=0)
    column = op("Unsqueeze", [scale, "rowq_last"], "scale_column")
    return _Rows(quantised, column, lead)


def _integer_matmul(node: onnx.NodeProto, weight: np.ndarray, rows: _Rows, weight_bits: int,
                    names: _Names, nodes: list, initializers: list) -> None:
    """Append the int8 product that replaces ``node``, writing ``node``'s output."""
    from onnx import helper, numpy_helper

    limit = float(2 ** (weight_bits - 1) - 1)
    column_scale = (np.maximum(np.abs(weight).max(axis=0), 1e-12) / limit).astype(np.float32)
    integer = np.clip(np.round(weight / column_scale), -limit, limit).astype(np.int8)
    base = names.new(f"{node.name or node.output[0]}_rowq")
    initializers += [
        numpy_helper.from_array(integer, f"{base}_w"),
        numpy_helper.from_array(column_scale, f"{base}_wscale"),
        numpy_helper.from_array(np.array([weight.shape[1]], dtype=np.int64), f"{base}_n"),
    ]
    nodes += [
        helper.make_node("MatMulIntegerToFloat",
                         [rows.quantised, f"{base}_w", "rowq_one", f"{base}_wscale",
                          "rowq_zero_point"],
                         [f"{base}_rows"], name=f"{base}_mm", domain="com.microsoft"),
        helper.make_node("Mul", [f"{base}_rows", rows.scale], [f"{base}_cols"],
                         name=f"{base}_cols"),
        helper.make_node("Concat", [rows.lead, f"{base}_n"], [f"{base}_shape"], axis=0,
                         name=f"{base}_shape"),
        helper.make_node("Reshape", [f"{base}_cols", f"{base}_shape"], [node.output[0]],
                         name=f"{base}_out"),
    ]


class _Names:
    """Unique node-name prefixes (one tensor may feed several rewritten MatMuls)."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken

    def new(self, stem: str) -> str:
        stem = stem.replace("/", "_").replace(":", "_").strip("_") or "rowq"
        name, index = stem, 1
        while name in self.taken:
            index += 1
            name = f"{stem}_{index}"
        self.taken.add(name)
        return name
