"""The ONNX Runtime backend: an int8 (or fp32) graph of a classifier, built once and cached.

On a CPU without a GPU the encoder's dense layers dominate; int8 matrix units (AVX512-VNNI,
AVX-VNNI, AMX) do roughly twice the work of bf16 per cycle. The graph is built in three
steps, each from the library that owns it:

1. ``torch.onnx.export`` of the merged classifier (eager attention, so the pattern is
   recognisable) with probabilities as the output;
2. the ONNX Runtime transformer optimizer fuses embeddings + LayerNorm, multi-head attention
   and bias + GELU into single kernels (not residual + LayerNorm: that kernel is slower than
   its parts on the CPU);
3. for int8, row-wise dynamic quantisation (``models.int8_rows``): the weights of every
   MatMul with a constant weight become int8 per output column, and each token's
   activations get their own scale at run time. A text's probabilities therefore do not
   depend on the other texts in its batch (ONNX Runtime's own dynamic quantisation uses one
   scale per batch, which made a post's label depend on its batch-mates). For models whose
   manifest says ``int8_smooth`` the FFN down-projections are smoothed and quantised too,
   with channel peaks measured once on ``calibration.txt`` through the fused fp32 graph;
   otherwise they stay in fp32. The attention kernel is left unfused for int8 so that its
   query, key and value projections run in int8 too (the fused kernel would run them in
   fp32).

The built graph is cached on disk
under a key made of the artifact's version and everything that changes the graph, so a
restart loads it in a second; the file is written to a temporary name and renamed, so
processes that build it at the same time never read half a file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import queue
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from finpulse.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

#: Bump when the export recipe changes, so stale cached graphs are not reused.
RECIPE = 4
OPSET = 17

#: Short finance texts (written for finpulse) whose activation peaks set the smoothing of
#: the int8 graph's down-projections.
CALIBRATION_TEXTS = Path(__file__).with_name("calibration.txt")


def onnxruntime_available() -> bool:
    """True when ``onnxruntime`` (and ``onnx`` for building graphs) can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def cpu_supports_int8() -> bool:
    """True when the CPU has int8 dot-product instructions (AVX512-VNNI, AVX-VNNI or AMX)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


#: The cache folder inside an artifact directory (git-ignored for the bundled model).
ARTIFACT_CACHE = "onnx-cache"


def default_cache_dir(artifact: Path | None = None) -> Path:
    """Where built graphs are kept when ``model.cache_dir`` is not set.

    Beside the artifact (``<artifact>/onnx-cache``), so a graph lives and dies with its
    model, when that directory is writable; else ``~/.cache/finpulse/onnx``.
    """
    if artifact is not None and os.access(artifact, os.W_OK):
        return artifact / ARTIFACT_CACHE
    return Path.home() / ".cache" / "finpulse" / "onnx"


def int8_weight_bits() -> int:
    """Bits per int8 weight for this CPU: 8 with VNNI or AMX, else 7.

    Without VNNI, ONNX Runtime's u8 x s8 kernel adds pairs of products in int16, which can
    saturate with 8-bit weights; 7-bit weights keep every pair in range.
    """
    return 8 if cpu_supports_int8() else 7


def exact_weight_bits() -> tuple[int, ...]:
    """The weight bits whose int8 graph this CPU computes exactly, as every CPU would.

    With VNNI or AMX both 8 and 7; otherwise only 7 (8-bit weights may saturate there).
    """
    return (8, 7) if cpu_supports_int8() else (7,)


def smoothing_chosen(flag: bool | Mapping[str, bool] | None, weight_bits: int) -> bool:
    """Whether a manifest's ``int8_smooth`` asks for the smoothed graph at ``weight_bits``.

    ``flag`` is a mapping from weight bits (``"8"``, ``"7"``) to the choice training made
    for each, or one bool for all bits (artifacts from before per-width choices). Absent: False.
    """
    if isinstance(flag, Mapping):
        return bool(flag.get(str(weight_bits), False))
    return bool(flag)


def graph_path(cache_dir: Path, version: str, dtype: str,
               calibration: Sequence[Sequence[int]] | None = None,
               weight_bits: int | None = None) -> Path:
    """The cache file for one artifact version, dtype (``int8`` or ``float32``) and, for
    int8, calibration set and weight bits (default: ``int8_weight_bits()``)."""
    import onnxruntime

    bits = (weight_bits or int8_weight_bits()) if dtype == "int8" else 32
    recipe = f"{RECIPE}|{OPSET}|{dtype}|{bits}|{onnxruntime.__version__}|{torch.__version__}"
    if dtype == "int8" and calibration:
        recipe += "|" + json.dumps([list(ids) for ids in calibration])
    digest = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in version)
    return cache_dir / f"{safe}-{dtype}-{digest}.onnx"


class _Probabilities(torch.nn.Module):
    """The classifier with softmax on top: the graph returns probabilities."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(input_ids, attention_mask).float(), dim=-1)


def calibration_ids(tokenizer: Any, max_length: int) -> list[list[int]]:
    """``CALIBRATION_TEXTS`` as token ids (special tokens included, cut at ``max_length``)."""
    lines = CALIBRATION_TEXTS.read_text(encoding="utf-8").splitlines()
    texts = [line for line in lines if line.strip() and not line.startswith("#")]
    return [ids[:max_length] for ids in tokenizer(texts)["input_ids"]]


def activation_peaks(graph: onnx.ModelProto, names: Sequence[str],
                     calibration: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """The peak ``|x|`` of each channel of the tensors ``names`` over the calibration texts.

    Runs a copy of the fp32 ``graph`` with those tensors as extra outputs, one text per run
    (no padding rows in the peaks).
    """
    import onnx
    import onnxruntime

    probe = onnx.ModelProto()
    probe.CopyFrom(graph)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT,
                                                                 None) for name in names)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    peaks: dict[str, np.ndarray] = {}
    for ids in calibration:
        row = np.asarray([ids], dtype=np.int64)
        outputs = session.run(list(names), {"input_ids": row, "attention_mask": np.ones_like(row)})
        for name, value in zip(names, outputs, strict=True):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            peaks[name] = np.maximum(peaks[name], peak) if name in peaks else peak
    return peaks


def build_graph(model: torch.nn.Module, path: Path, *, dtype: str = "int8",
                calibration: Sequence[Sequence[int]] | None = None,
                weight_bits: int | None = None) -> Path:
    """Export, fuse and (for ``int8``) quantise a classifier into ``path``.

    Args:
        model: a ``SentimentClassifier`` in fp32 on the CPU (adapters merged).
        path: the target file; written atomically.
        dtype: ``int8`` (quantised) or ``float32`` (fused only).
        calibration: token ids of texts for ``activation_peaks``; with them the int8 graph
            smooths and quantises the FFN down-projections, without them it keeps those in
            fp32.
        weight_bits: 8 or 7 for int8 (default: ``int8_weight_bits()``).

    Returns:
        ``path``.

    Raises:
        ModelError: export, fusion or quantisation failed.
    """
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from models.int8_rows import quantize_rows, smoothed_inputs

    path.parent.mkdir(parents=True, exist_ok=True)
    config = model.encoder.config
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".build-") as tmp:
        raw, fused, final = Path(tmp) / "raw.onnx", Path(tmp) / "fused.onnx", Path(tmp) / "final.onnx"
        try:
            _export(model, raw)
            options = FusionOptions("bert")
            # int8: unfused attention, so its Q, K and V projections are quantised too
            # (measured faster than the fused fp32 kernel with int8 elsewhere).
            options.enable_attention = dtype != "int8"
            # ONNX Runtime's SkipLayerNormalization CPU kernel took 4.6x the time of Add +
            # LayerNormalization on the same rows (ORT 1.32, 512 x 384, one thread): 23% of
            # the int8 graph's time. Unfused, the residual adds and LayerNorms run apart.
            options.enable_skip_layer_norm = False
            options.enable_bias_skip_layer_norm = False
            with _quiet_root_logger():
                optimizer = optimize_model(str(raw), model_type="bert",
                                           num_heads=config.num_attention_heads,
                                           hidden_size=config.hidden_size, opt_level=1,
                                           optimization_options=options)
            fusions = {k: v for k, v in optimizer.get_fused_operator_statistics().items() if v}
            optimizer.save_model_to_file(str(fused))
            if dtype == "int8":
                graph = onnx.load(str(fused))
                smoothed = smoothed_inputs(graph)
                peaks = (activation_peaks(graph, smoothed, calibration)
                         if calibration and smoothed else None)
                graph, count = quantize_rows(graph,
                                             weight_bits=weight_bits or int8_weight_bits(),
                                             peaks=peaks)
                fusions["MatMulIntegerToFloat"] = count
                onnx.save(graph, str(final))
            else:
                final = fused
            os.replace(final, path)
        except (RuntimeError, ValueError, OSError, onnx.checker.ValidationError) as exc:
            raise ModelError(f"cannot build the ONNX graph: {exc}") from exc
    logger.info("built %s graph %s (fused: %s)", dtype, path, fusions)
    return path


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """Hide the transformer optimizer's step-by-step INFO lines (logged on the root logger)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _export(model: torch.nn.Module, target: Path) -> None:
    encoder = model.encoder
    previous = encoder.config._attn_implementation
    # The optimizer recognises the eager attention pattern, not the SDPA call.
    encoder.set_attn_implementation("eager")
    example = torch.ones((2, 8), dtype=torch.long)
    try:
        with warnings.catch_warnings():
            # Tracing notes about Python control flow on shapes; the graph takes batch and
            # sequence length as dynamic axes and is checked against fp32 in the tests.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Probabilities(model).eval(), (example, example), str(target),
                input_names=["input_ids", "attention_mask"], output_names=["probabilities"],
                dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                              "attention_mask": {0: "batch", 1: "tokens"},
                              "probabilities": {0: "batch"}},
                opset_version=OPSET, dynamo=False)
    finally:
        encoder.set_attn_implementation(previous)


class OnnxClassifier:
    """ONNX Runtime sessions that map padded token ids to class probabilities.

    With ``workers`` > 1 there is one single-threaded session per worker, and ``run_all``
    scores that many batches at once (ONNX Runtime releases the GIL while it runs). On small
    batches of short texts this beats one session whose intra-op threads split each
    matrix product: 2 workers gave 1.35-1.45x the texts/s of one 2-thread session on a
    2-core EPYC (``finpulse bench``, docs/configuration.md).

    Args:
        path: the graph built by ``build_graph``.
        threads: CPU threads in all (default: torch's thread count, i.e. the process setting).
        workers: batches run at once (default: one per thread); each session gets
            ``threads // workers`` intra-op threads. 1: one session using every thread.
        spinning: let idle intra-op threads spin; faster back-to-back batches, but burns CPU
            that a scorer's consumer and database threads could use between batches.
    """

    def __init__(self, path: Path, *, threads: int | None = None, workers: int | None = None,
                 spinning: bool = False) -> None:
        import onnxruntime

        threads = threads or torch.get_num_threads()
        self.workers = max(1, min(workers or threads, threads))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = max(1, threads // self.workers)
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning",
                                         "1" if spinning else "0")
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        try:
            for _ in range(self.workers):
                self._idle.put(onnxruntime.InferenceSession(
                    str(path), options, providers=["CPUExecutionProvider"]))
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load ONNX graph {path}: {exc}") from exc
        self._pool = (ThreadPoolExecutor(self.workers, thread_name_prefix="onnx")
                      if self.workers > 1 else None)
        #: For an int8 graph, set by ``load_onnx``: its weight bits and whether its FFN
        #: down-projections are smoothed and quantised.
        self.int8: dict[str, Any] | None = None

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Probabilities, shape ``(batch, labels)``, for int64 ``ids`` and ``mask``."""
        session = self._idle.get()
        try:
            return session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        finally:
            self._idle.put(session)

    def run_all(self, batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> Iterator[np.ndarray]:
        """Probabilities of each ``(ids, mask)`` batch, in order; up to ``workers`` at once."""
        if self._pool is None:
            return (self(ids, mask) for ids, mask in batches)
        return self._pool.map(lambda batch: self(*batch), batches)


def load_onnx(model: torch.nn.Module, version: str, *, dtype: str, cache_dir: Path | None,
              artifact: Path | None = None, threads: int | None = None,
              workers: int | None = None,
              calibration: Sequence[Sequence[int]] | None = None,
              weight_bits: int | None = None) -> OnnxClassifier:
    """Open the cached graph for ``version``, building it first if needed.

    Args:
        model: the fp32 classifier (used only when the graph must be built).
        version: the artifact version (the cache key).
        dtype: ``int8`` or ``float32``.
        cache_dir: where graphs are cached (None: ``default_cache_dir(artifact)``).
        artifact: the artifact directory the model came from.
        threads: CPU threads in all.
        workers: batches run at once (see ``OnnxClassifier``).
        calibration: token ids for smoothing the int8 graph (see ``build_graph``).
        weight_bits: int8 weight bits (default: ``int8_weight_bits()``).

    Returns:
        A ready session.

    Raises:
        ConfigError: onnxruntime is not installed, or an unknown dtype.
        ModelError: the graph cannot be built or loaded.
    """
    if not onnxruntime_available():
        raise ConfigError("backend: onnx needs the onnxruntime and onnx packages", field="backend")
    if dtype not in ("int8", "float32"):
        raise ConfigError(f"dtype: the onnx backend runs int8 or float32, not {dtype}",
                          field="dtype")
    bits = weight_bits or int8_weight_bits()
    path = graph_path(cache_dir or default_cache_dir(artifact), version, dtype, calibration, bits)
    if not path.is_file():
        build_graph(model, path, dtype=dtype, calibration=calibration, weight_bits=bits)
    classifier = OnnxClassifier(path, threads=threads, workers=workers)
    if dtype == "int8":
        classifier.int8 = {"weight_bits": bits, "smoothed": bool(calibration)}
    return classifier

