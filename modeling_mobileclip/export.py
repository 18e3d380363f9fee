"""Export the re-parameterised MobileCLIP encoders to ONNX, OpenVINO IR (or Core ML) for deployment.

Each tower becomes its own graph, so that image and text embeddings can be computed separately (e.g. an image index
built offline and text queries embedded on device):

* `image_encoder.onnx`: `pixel_values` (batch, 3, S, S) float32 -> `image_embeds` (batch, projection_dim)
* `text_encoder.onnx`: `input_ids` (batch, 77) int64 -> `text_embeds` (batch, projection_dim)

The batch axis is dynamic. Embeddings are projected but *not* L2-normalised, as `get_image_features(...).pooler_output`
and `get_text_features(...).pooler_output`. Every graph is run with onnxruntime and compared with eager PyTorch at two
batch sizes before it is kept, and written atomically (`atomic.atomic_path`: a temporary beside it, then renamed).
The ONNX opset must be one torch's exporters support, and a graph is only kept if it was written in the opset asked
for (the dynamo exporter silently keeps its own opset when it cannot convert). `export_config.json` records what a
runtime needs to feed the graphs: image size, mean/std, context length, token ids. `--format openvino` converts the
verified ONNX graphs to OpenVINO IR (`image_encoder.xml` + `.bin`), checked the same way with OpenVINO's runtime;
`--format onnx-int8` and `openvino-int8` quantize them (onnxruntime, NNCF), calibrated on real images and kept only if
held-out ones stay close to float32.

    python -m modeling_mobileclip.export --model DIR --format onnx --output DIR
"""

import argparse
import copy
import importlib.util
import logging
import numbers
import os
import shutil
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from .atomic import atomic_path, scratch_folder, write_json
from .configuration_mobileclip import MobileCLIPConfig, MobileCLIPTextConfig, MobileCLIPVisionConfig
from .example_inputs import example_input_ids, example_pixel_values
from .loading import image_preprocessing, load_model, saved_image_processor
from .modeling_mobileclip import MAX_LOGIT_SCALE, MobileCLIPPreTrainedModel
from .modeling_mobileclip import MobileCLIPTextModelWithProjection as TextTower
from .modeling_mobileclip import MobileCLIPVisionModelWithProjection as ImageTower

logger = logging.getLogger(__name__)

SUPPORTED_FORMATS = ("onnx", "onnx-int8", "openvino", "openvino-int8", "coreml")
EXPORTERS = ("auto", "dynamo", "torchscript")
DEFAULT_OPSET = 18
DEFAULT_ATOL = 1e-4
# Batch sizes the exported graphs are checked at: 1 and another one, to prove the batch axis is really dynamic.
VERIFY_BATCH_SIZES = (1, 3)
# Batch of the example input the graph is traced with; torch.export specialises sizes 0 and 1, so not 1.
EXAMPLE_BATCH = 2
CONFIG_NAME = "export_config.json"
# An int8 graph is kept only if every held-out real image and text keeps at least this cosine similarity to the float32
# embedding (zero-shot answers are then nearly always unchanged; benchmarks/precision.py measures how often).
INT8_MIN_COSINE = 0.99
# Captions to calibrate and check the int8 text encoder with when the caller gives none: varied lengths and words.
DEFAULT_CALIBRATION_TEXTS = tuple(
    template.format(noun)
    for template in ("a photo of a {}.", "a close-up photo of the {} on a wooden table", "{}",
                     "a blurry low resolution picture of a small {} next to a window, taken at night")
    for noun in ("dog", "cat", "car", "tree", "person riding a bicycle", "bowl of soup", "red shoe", "city street")
)
OPENVINO_INSTALL_HINT = "OpenVINO export needs openvino: pip install openvino (or this package's [export] extra)."
OPENVINO_INT8_INSTALL_HINT = ("int8 OpenVINO export quantizes with NNCF: pip install openvino nncf (or this package's "
                              "[export] extra).")
# OpenVINO's CPU inference precisions a compiled model may compute in (its INFERENCE_PRECISION_HINT).
OPENVINO_PRECISIONS = ("f32", "bf16")
COREML_INSTALL_HINT = (
    "Core ML export needs coremltools, which is not a dependency of this package. Install it with "
    "`pip install coremltools` (it converts on macOS and Linux; running the converted model needs macOS)."
)


# --------------------------------------------------------------------------------------------------------------------
# The towers as single-input, single-output modules


class _TowerEncoder(nn.Module):
    """One tower's input -> its un-normalised projected embeddings, from a full model or that tower's model."""

    tower_class: type
    output_name: str  # the tower model's output field
    features: str  # the full model's method

    def __init__(self, model: MobileCLIPPreTrainedModel):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if isinstance(self.model, self.tower_class):
            return getattr(self.model(inputs), self.output_name)
        return getattr(self.model, self.features)(inputs).pooler_output


class ImageEncoder(_TowerEncoder):
    """`pixel_values` -> un-normalised projected `image_embeds`, from a full model or an image-tower model."""

    tower_class, output_name, features = ImageTower, "image_embeds", "get_image_features"


class TextEncoder(_TowerEncoder):
    """`input_ids` -> un-normalised projected `text_embeds`, from a full model or a text-tower model."""

    tower_class, output_name, features = TextTower, "text_embeds", "get_text_features"


def _tower_configs(model: MobileCLIPPreTrainedModel) -> tuple[MobileCLIPVisionConfig | None,
                                                                MobileCLIPTextConfig | None]:
    config = model.config
    if isinstance(config, MobileCLIPConfig):
        return config.vision_config, config.text_config
    if isinstance(model, ImageTower):
        return config, None
    if isinstance(model, TextTower):
        return None, config
    raise TypeError(f"Expected a MobileCLIP model, got {type(model).__name__}.")


@dataclass
class Tower:
    """An exportable tower: its single-input module, the graph's input and output names, and its config."""

    module: nn.Module
    input_name: str
    output_name: str
    config: MobileCLIPVisionConfig | MobileCLIPTextConfig

    def example(self, batch: int, seed: int = 0) -> torch.Tensor:
        """An example input of `batch` rows (`example_pixel_values` or `example_input_ids`)."""
        if isinstance(self.config, MobileCLIPVisionConfig):
            return example_pixel_values(self.config, batch, seed)
        return example_input_ids(self.config, batch, seed)


def encoders(model: MobileCLIPPreTrainedModel) -> dict[str, Tower]:
    """The exportable towers of a model: `"image_encoder"` and/or `"text_encoder"` -> `Tower`."""
    vision_config, text_config = _tower_configs(model)
    towers = {}
    if vision_config is not None:
        towers["image_encoder"] = Tower(ImageEncoder(model).eval(), "pixel_values", "image_embeds", vision_config)
    if text_config is not None:
        towers["text_encoder"] = Tower(TextEncoder(model).eval(), "input_ids", "text_embeds", text_config)
    return towers


# --------------------------------------------------------------------------------------------------------------------
# ONNX


def supported_opsets() -> range:
    """The ONNX opsets torch's exporters can write (TorchScript's symbolic functions; dynamo converts to them)."""
    try:
        from torch.onnx import _constants

        return range(_constants.ONNX_MIN_OPSET, _constants.ONNX_MAX_OPSET + 1)
    except (ImportError, AttributeError):  # private module: if it moves, allow what this module was tested with
        return range(7, 24)


def check_opset(opset) -> None:
    """Raises `ValueError` unless `opset` is an opset the exporters support."""
    opsets = supported_opsets()
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral) or opset not in opsets:
        raise ValueError(f"ONNX opset {opset!r} is not supported: torch {torch.__version__} exports opsets "
                         f"{opsets.start} to {opsets.stop - 1} (default {DEFAULT_OPSET}).")


def graph_opset(path: str) -> int:
    """The default-domain ONNX opset a graph file was written in."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    return next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))


def _torch_onnx_export(module: nn.Module, example: torch.Tensor, path: str, input_name: str, output_name: str,
                       exporter: str, opset: int) -> None:
    common = dict(input_names=[input_name], output_names=[output_name], opset_version=opset)
    if exporter == "dynamo":
        # external_data=False: every tower (up to ViT-L/14, 1.2 GB) fits the 2 GB protobuf limit, and a single file
        # can be renamed into place without breaking a reference to a side-car weights file.
        torch.onnx.export(module, (example,), path, dynamo=True, external_data=False, verbose=False,
                          dynamic_shapes={input_name: {0: torch.export.Dim("batch")}}, **common)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated and says so at length
            torch.onnx.export(module, (example,), path, dynamo=False,
                              dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}}, **common)


def ort_session(path: str, threads: int | None = None):
    """An onnxruntime CPU session with full graph optimisation and without spin-waiting threads (which would steal CPU
    from anything else running, e.g. interleaved benchmarks)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def _max_abs_diffs(run, tower: Tower, batch_sizes, runtime: str) -> dict[int, float]:
    """Max abs difference between `run(numpy input) -> numpy output` and eager PyTorch, per batch size."""
    diffs = {}
    for batch in batch_sizes:
        inputs = tower.example(batch, seed=batch)
        expected = tower.module(inputs).numpy()
        actual = run(inputs.numpy())
        if actual.shape != expected.shape:
            raise ValueError(f"{runtime} output shape {actual.shape} != eager {expected.shape} at batch {batch}.")
        diffs[batch] = float(abs(actual - expected).max())
    return diffs


def verify_onnx(path: str, tower: Tower, batch_sizes=VERIFY_BATCH_SIZES) -> dict[int, float]:
    """Max abs difference between onnxruntime and eager PyTorch, per batch size."""
    session = ort_session(path)
    return _max_abs_diffs(lambda x: session.run([tower.output_name], {tower.input_name: x})[0], tower, batch_sizes,
                          "onnxruntime")


def _export_tower_onnx(tower: Tower, path: str, exporter: str, opset: int, atol: float) -> dict:
    """Exports one tower to a temporary file, verifies it, and only then moves it to `path`."""
    candidates = ("dynamo", "torchscript") if exporter == "auto" else (exporter,)
    errors = []
    for name in candidates:
        try:
            with atomic_path(path) as tmp_path:
                _torch_onnx_export(tower.module, tower.example(EXAMPLE_BATCH), tmp_path, tower.input_name,
                                   tower.output_name, name, opset)
                written = graph_opset(tmp_path)
                if written != opset:  # dynamo keeps opset 18 when its version converter fails, and logs it only
                    raise ValueError(f"the graph was written in opset {written}, not the requested opset {opset}")
                diffs = verify_onnx(tmp_path, tower)
                if not max(diffs.values()) <= atol:
                    raise ValueError(f"onnxruntime differs from eager PyTorch: max abs diff per batch size {diffs} "
                                     f"> {atol}")
            logger.info("Wrote %s (%s exporter, max abs diff vs eager %s)", path, name, diffs)
            return dict(file=os.path.basename(path), exporter=name, opset=opset, input=tower.input_name,
                        output=tower.output_name, max_abs_diff={str(k): v for k, v in diffs.items()})
        except Exception as error:  # noqa: BLE001 - any exporter failure falls through to the next exporter
            errors.append(f"{name}: {type(error).__name__}: {error}")
            logger.warning("%s export of %s failed: %s", name, os.path.basename(path), errors[-1][:500])
    raise RuntimeError(f"Could not export {os.path.basename(path)}:\n  " + "\n  ".join(errors))


def _prepare(model: MobileCLIPPreTrainedModel) -> MobileCLIPPreTrainedModel:
    """The fused fp32 eval-mode model: the caller's own if it already is one, else a converted copy (the caller's model
    is never modified)."""
    if not isinstance(model, MobileCLIPPreTrainedModel):
        raise TypeError(f"Expected a MobileCLIP model, got {type(model).__name__}.")
    configs = [c for c in _tower_configs(model) if c is not None]
    fused = all(c.reparameterized for c in configs)
    if not fused or model.training or model.dtype != torch.float32:
        model = copy.deepcopy(model).reparameterize().float().eval()
    return model


def preprocessing_info(model: MobileCLIPPreTrainedModel, model_dir: str | None = None) -> dict:
    """What the image processor does before the image encoder (`saved_image_processor`, `image_preprocessing`), or
    unknown (`None`)."""
    vision_config, _ = _tower_configs(model)
    info = dict(image_size=vision_config.image_size if vision_config else None, rescale_factor=1 / 255,
                image_mean=None, image_std=None, resample=None, source=None)
    processor, source = saved_image_processor(model, model_dir)
    if processor is not None:
        preprocessing = image_preprocessing(processor)
        info.update({key: preprocessing[key] for key in ("rescale_factor", "resample")}, source=source,
                    **{key: None if preprocessing[key] is None else list(preprocessing[key])
                       for key in ("image_mean", "image_std")})
    return info


def _export_config(model: MobileCLIPPreTrainedModel, files: dict, fmt: str, model_dir: str | None) -> dict:
    vision_config, text_config = _tower_configs(model)
    config = dict(
        format=fmt,
        variant=getattr(model.config, "variant", None),
        projection_dim=(vision_config or text_config).projection_dim,
        embeddings_normalized=False,  # L2-normalise before taking cosine similarities
        logit_scale=(float(model.logit_scale.detach().exp().clamp(max=MAX_LOGIT_SCALE))
                     if hasattr(model, "logit_scale") else None),
        files=files,
    )
    if vision_config is not None:
        config["preprocessing"] = preprocessing_info(model, model_dir)
        config["image_size"] = vision_config.image_size
    if text_config is not None:
        config.update(context_length=text_config.max_position_embeddings, pad_token_id=text_config.pad_token_id,
                      bos_token_id=text_config.bos_token_id, eos_token_id=text_config.eos_token_id)
    config["torch_version"] = torch.__version__
    return config


def export_onnx(model: MobileCLIPPreTrainedModel, output_dir: str, *, opset: int = DEFAULT_OPSET,
                exporter: str = "auto", atol: float = DEFAULT_ATOL, towers: tuple[str, ...] | None = None,
                model_dir: str | None = None) -> dict:
    """Exports the re-parameterised image and text encoders as ONNX graphs with a dynamic batch axis.

    Args:
        model: a `MobileCLIPModel` (both towers) or a single-tower model. A fused copy is exported if it is not
            re-parameterised yet; the model passed in is not modified.
        output_dir: folder to write `image_encoder.onnx`, `text_encoder.onnx` and `export_config.json` to (created).
        opset: ONNX opset, one of `supported_opsets()`; the written graphs are checked to have it.
        exporter: `"dynamo"` (`torch.onnx.export(..., dynamo=True)`), `"torchscript"` (the legacy exporter), or
            `"auto"`: dynamo, falling back to TorchScript if the export fails or does not verify.
        atol: largest max abs difference from eager PyTorch that onnxruntime may show at batch 1 and 3.
        towers: subset of `("image_encoder", "text_encoder")`; default all the model has.
        model_dir: folder the model was loaded from, to read its `preprocessor_config.json` (default:
            `model.name_or_path`).

    Returns:
        The contents of `export_config.json`.

    Raises:
        ImportError: onnxruntime (needed for the check) is missing.
        RuntimeError: a tower could not be exported so that onnxruntime matches eager PyTorch.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"Unknown exporter {exporter!r}; supported: {', '.join(EXPORTERS)}.")
    check_opset(opset)
    try:
        import onnxruntime  # noqa: F401 - checked first: a graph is never kept unverified
    except ImportError as error:
        raise ImportError("ONNX export verifies every graph with onnxruntime: pip install onnx onnxruntime") from error
    prepared = _prepare(model)
    available = encoders(prepared)
    towers = tuple(towers or available)
    unknown = [t for t in towers if t not in available]
    if unknown:
        raise ValueError(f"{type(model).__name__} has no tower(s) {unknown}; available: {list(available)}.")
    os.makedirs(output_dir, exist_ok=True)
    files = {}
    for name in towers:
        files[name] = _export_tower_onnx(available[name], os.path.join(output_dir, f"{name}.onnx"), exporter, opset,
                                         atol)
    config = _export_config(prepared, files, "onnx", model_dir)
    write_json(os.path.join(output_dir, CONFIG_NAME), config)
    return config


def _quantize_tower(tower: Tower, fp32_path: str, path: str, calibration: torch.Tensor | None, check: torch.Tensor,
                    min_cosine: float) -> dict:
    """Quantizes one verified float32 graph to int8 and keeps it only if `check` inputs stay within `min_cosine`.

    With `calibration` inputs: static QDQ quantization (int8 weights per channel, uint8 activations whose ranges are
    calibrated on them), what convolutions need to run in int8. Without: dynamic quantization (int8 weights,
    activation ranges computed at run time), the usual choice for transformer text encoders.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration.split(1))

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {tower.input_name: batch.numpy()}

    with scratch_folder(path) as work:
        prepared = os.path.join(work, "prepared.onnx")
        quant_pre_process(fp32_path, prepared)  # shape inference and graph optimisation, as onnxruntime advises
        with atomic_path(path) as quantized:
            if calibration is not None:
                quantize_static(prepared, quantized, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
            else:
                quantize_dynamic(prepared, quantized, per_channel=True, weight_type=QuantType.QInt8)
            with torch.no_grad():
                expected = tower.module(check)
            (actual,) = ort_session(quantized).run([tower.output_name], {tower.input_name: check.numpy()})
            cosine = _check_cosine(torch.from_numpy(actual), expected, min_cosine, os.path.basename(path))
    logger.info("Wrote %s (int8, cosine to float32 min %.4f, mean %.4f)", path, cosine.min(), cosine.mean())
    return dict(quantization="static QDQ int8, calibrated" if calibration is not None else "dynamic int8",
                calibration_inputs=0 if calibration is None else len(calibration), check_inputs=len(check),
                cosine_to_float32={"min": float(cosine.min()), "mean": float(cosine.mean())})


def _check_cosine(actual: torch.Tensor, expected: torch.Tensor, min_cosine: float, name: str) -> torch.Tensor:
    """The per-input cosine similarity of int8 to float32 embeddings; raises `ValueError` if any is below
    `min_cosine`."""
    cosine = torch.nn.functional.cosine_similarity(actual, expected, dim=-1)
    if not cosine.min() >= min_cosine:
        raise ValueError(f"int8 {name} differs from float32: cosine similarity of the embeddings min "
                         f"{cosine.min():.4f} (mean {cosine.mean():.4f}) < {min_cosine} on {len(expected)} held-out "
                         "inputs; nothing was written. Calibrate on more representative images, or export float32.")
    return cosine


def _int8_inputs(towers, pixel_values: torch.Tensor | None, input_ids: torch.Tensor | None) -> dict:
    """Each tower's real inputs to calibrate and check on (`ValueError` if one is missing)."""
    inputs = {"image_encoder": ("images", pixel_values), "text_encoder": ("texts", input_ids)}
    for name in towers:
        if inputs[name][1] is None:
            raise ValueError(f"int8 export of {name} needs real {inputs[name][0]} to calibrate and check on")
    return {name: inputs[name][1] for name in towers}


def _split_held_out(inputs: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Three quarters to calibrate, the rest (at least one) to check on: never checked on what it was fitted to."""
    if len(inputs) < 2:
        raise ValueError(f"int8 export needs at least 2 {name} (to calibrate and to check on), got {len(inputs)}")
    held_out = max(1, len(inputs) // 4)
    return inputs[:-held_out], inputs[-held_out:]


def export_onnx_int8(model: MobileCLIPPreTrainedModel, output_dir: str, *, pixel_values: torch.Tensor | None = None,
                     input_ids: torch.Tensor | None = None, min_cosine: float = INT8_MIN_COSINE,
                     towers: tuple[str, ...] | None = None, **onnx_kwargs) -> dict:
    """Exports int8 ONNX encoders: float32 graphs (`export_onnx`, verified), then quantized with onnxruntime.

    Args:
        pixel_values: preprocessed real images (as the image processor makes them): three quarters calibrate the
            image encoder's activation ranges, the rest check it. Required for the image encoder.
        input_ids: tokenised real captions (padded to the context length), to check the dynamically quantized text
            encoder on. Required for it.
        min_cosine: smallest cosine similarity to the float32 embedding allowed on the held-out inputs.
        onnx_kwargs: `export_onnx`'s `opset`, `exporter`, `atol`, `model_dir`.

    Returns:
        The contents of `export_config.json`, with each file's quantization and measured cosine similarity.
    """
    prepared = _prepare(model)
    available = encoders(prepared)
    towers = tuple(towers or available)
    _int8_inputs(towers, pixel_values, input_ids)
    os.makedirs(output_dir, exist_ok=True)
    with scratch_folder(os.path.join(output_dir, "fp32")) as fp32_dir:  # verified float32 graphs, then quantized
        config = export_onnx(prepared, fp32_dir, towers=towers, **onnx_kwargs)
        for name in towers:
            if name == "image_encoder":
                calibration, check = _split_held_out(pixel_values, "images")
            else:  # dynamic quantization calibrates nothing: every text checks
                calibration, check = None, input_ids
            info = _quantize_tower(available[name], os.path.join(fp32_dir, f"{name}.onnx"),
                                   os.path.join(output_dir, f"{name}.onnx"), calibration, check, min_cosine)
            config["files"][name].update(info)
    config["format"] = "onnx-int8"
    write_json(os.path.join(output_dir, CONFIG_NAME), config)
    return config


# --------------------------------------------------------------------------------------------------------------------
# OpenVINO


def openvino_model(path, precision: str = "auto", threads: int | None = None):
    """An OpenVINO CPU model compiled from an IR (`.xml`) or ONNX file (or an `openvino.Model`) for latency (one
    inference stream), computing in `precision`: `"f32"`, `"bf16"`, or `"auto"`: bf16 where the CPU computes it
    natively (`native_bfloat16`), else f32. Call it with a numpy input; `result[0]` is the embeddings (float32)."""
    try:
        import openvino as ov
    except ImportError as error:
        raise ImportError(OPENVINO_INSTALL_HINT) from error
    from .inference import native_bfloat16

    if precision == "auto":
        precision = "bf16" if native_bfloat16("cpu") else "f32"
    if precision not in OPENVINO_PRECISIONS:
        raise ValueError(f"OpenVINO precision {precision!r}: choose one of {', '.join(OPENVINO_PRECISIONS)} or auto")
    return ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                                                 "INFERENCE_NUM_THREADS": threads or torch.get_num_threads()})


def verify_openvino(path, tower: Tower, batch_sizes=VERIFY_BATCH_SIZES) -> dict[int, float]:
    """Max abs difference between OpenVINO (computing in float32; `path` a file or an `openvino.Model`) and eager
    PyTorch, per batch size."""
    compiled = openvino_model(path, "f32")
    return _max_abs_diffs(lambda x: compiled(x)[0], tower, batch_sizes, "OpenVINO")


def _save_openvino(ov_model, output_dir: str, name: str) -> None:
    """Writes `name.xml` and `name.bin` (float32 weights stay float32) atomically: both go to a scratch folder, then
    the weights are renamed into place first, so that the graph naming them is the last to arrive."""
    import openvino as ov

    with scratch_folder(os.path.join(output_dir, name)) as staging:
        ov.save_model(ov_model, os.path.join(staging, f"{name}.xml"), compress_to_fp16=False)
        for suffix in (".bin", ".xml"):
            os.replace(os.path.join(staging, name + suffix), os.path.join(output_dir, name + suffix))


def export_openvino(model: MobileCLIPPreTrainedModel, output_dir: str, *, atol: float = DEFAULT_ATOL,
                    towers: tuple[str, ...] | None = None, **onnx_kwargs) -> dict:
    """Exports OpenVINO IR encoders (`image_encoder.xml` with its weights in `image_encoder.bin`, ...): the verified
    float32 ONNX graphs of `export_onnx`, converted with `openvino.convert_model`, weights kept in float32, each kept
    only if OpenVINO (in float32) matches eager PyTorch within `atol` at batch 1 and 3. The precision is chosen when
    the model is compiled: `openvino_model(path)` computes in bfloat16 where the CPU has it.

    Args:
        model, towers, atol: as in `export_onnx`.
        onnx_kwargs: `export_onnx`'s `opset`, `exporter`, `model_dir`.

    Returns:
        The contents of `export_config.json`.
    """
    try:
        import openvino as ov
    except ImportError as error:
        raise ImportError(OPENVINO_INSTALL_HINT) from error
    prepared = _prepare(model)
    available = encoders(prepared)
    os.makedirs(output_dir, exist_ok=True)
    with scratch_folder(os.path.join(output_dir, "onnx")) as onnx_dir:
        config = export_onnx(prepared, onnx_dir, towers=towers, atol=atol, **onnx_kwargs)
        for name, info in config["files"].items():
            converted = ov.convert_model(os.path.join(onnx_dir, info["file"]))
            diffs = verify_openvino(converted, available[name])
            if not max(diffs.values()) <= atol:
                raise RuntimeError(f"OpenVINO's {name} differs from eager PyTorch: max abs diff per batch size "
                                   f"{diffs} > {atol}; nothing was written.")
            _save_openvino(converted, output_dir, name)
            logger.info("Wrote %s (OpenVINO %s, max abs diff vs eager %s)", f"{name}.xml", ov.__version__, diffs)
            info.update(file=f"{name}.xml", weights=f"{name}.bin", openvino_version=ov.__version__,
                        max_abs_diff={str(k): v for k, v in diffs.items()}, converted_from=info["exporter"])
            del info["exporter"]
    config["format"] = "openvino"
    write_json(os.path.join(output_dir, CONFIG_NAME), config)
    return config


def export_openvino_int8(model: MobileCLIPPreTrainedModel, output_dir: str, *, pixel_values: torch.Tensor | None = None,
                         input_ids: torch.Tensor | None = None, min_cosine: float = INT8_MIN_COSINE,
                         towers: tuple[str, ...] | None = None, **onnx_kwargs) -> dict:
    """Exports int8 OpenVINO IR encoders: the float32 IR of `export_openvino` (verified), compressed by NNCF as
    `export_onnx_int8` quantizes with onnxruntime, each kept only if its held-out inputs keep a cosine similarity of at
    least `min_cosine` to float32 (compiled as `openvino_model` compiles it):

    * image encoder: static quantization (`nncf.quantize`, mixed preset: symmetric int8 weights per channel,
      asymmetric 8-bit activations, as onnxruntime's), calibrated on three quarters of the images, checked on the
      rest. NNCF's symmetric default kept a cosine of only 0.988 on a trained MCi tower;
    * text encoder: int8 weights, activations in floating point (`nncf.compress_weights`, data-free), checked on
      every text: static quantization of a small trained text tower kept 0.986.

    Args:
        pixel_values, input_ids: preprocessed real images / tokenised real captions, required for the image / text
            encoder.
        min_cosine, towers: as in `export_onnx_int8`.
        onnx_kwargs: `export_onnx`'s `opset`, `exporter`, `atol`, `model_dir`.
    """
    try:
        import nncf
        import openvino as ov
    except ImportError as error:
        raise ImportError(OPENVINO_INT8_INSTALL_HINT) from error
    prepared = _prepare(model)
    available = encoders(prepared)
    towers = tuple(towers or available)
    inputs = _int8_inputs(towers, pixel_values, input_ids)
    os.makedirs(output_dir, exist_ok=True)
    with scratch_folder(os.path.join(output_dir, "fp32")) as fp32_dir:
        config = export_openvino(prepared, fp32_dir, towers=towers, **onnx_kwargs)
        for name in towers:
            float_model = ov.Core().read_model(os.path.join(fp32_dir, f"{name}.xml"))
            if name == "image_encoder":
                calibration, check = _split_held_out(inputs[name], "images")
                compressed = nncf.quantize(float_model, nncf.Dataset([batch.numpy() for batch in calibration.split(1)]),
                                           subset_size=len(calibration), preset=nncf.QuantizationPreset.MIXED)
                info = dict(quantization=f"static int8 (NNCF {nncf.__version__}), calibrated",
                            calibration_inputs=len(calibration))
            else:
                check, compressed = inputs[name], nncf.compress_weights(float_model)
                info = dict(quantization=f"int8 weights (NNCF {nncf.__version__})", calibration_inputs=0)
            with torch.no_grad():
                expected = available[name].module(check)
            actual = torch.from_numpy(openvino_model(compressed)(check.numpy())[0])
            cosine = _check_cosine(actual, expected, min_cosine, name)
            _save_openvino(compressed, output_dir, name)
            logger.info("Wrote %s.xml (int8, cosine to float32 min %.4f, mean %.4f)", name, cosine.min(), cosine.mean())
            config["files"][name].update(info, check_inputs=len(check),
                                         cosine_to_float32={"min": float(cosine.min()), "mean": float(cosine.mean())})
    config["format"] = "openvino-int8"
    write_json(os.path.join(output_dir, CONFIG_NAME), config)
    return config


# --------------------------------------------------------------------------------------------------------------------
# Core ML (conversion only: coremltools is optional and can only run the result on macOS)


def export_coreml(model: MobileCLIPPreTrainedModel, output_dir: str, *, max_batch: int = 64,
                  towers: tuple[str, ...] | None = None, model_dir: str | None = None) -> dict:
    """Converts the re-parameterised encoders to Core ML ML Programs (`image_encoder.mlpackage`, ...), fp32, iOS 17 /
    macOS 14 or later, with a flexible batch axis (1 to `max_batch`) and int32 token ids.

    Conversion only: outputs are not compared with PyTorch, since Core ML models run on macOS alone. Checked to convert
    for every tower kind with coremltools 9.0 and torch 2.14 on Linux.

    Args:
        model: as in `export_onnx`.
        output_dir: folder to write the `.mlpackage` folders and `export_config.json` to.
        max_batch: upper bound of the flexible batch axis.
        towers: subset of `("image_encoder", "text_encoder")`.
        model_dir: as in `export_onnx`.

    Raises:
        ImportError: coremltools is not installed, with how to install it.
    """
    try:
        import coremltools as ct
    except ImportError as error:
        raise ImportError(COREML_INSTALL_HINT) from error
    import numpy as np

    prepared = _prepare(model)
    available = encoders(prepared)
    os.makedirs(output_dir, exist_ok=True)
    files = {}
    for name in towers or available:
        tower = available[name]
        example = tower.example(EXAMPLE_BATCH)
        # torch.export, not torch.jit.trace: coremltools 9 fails on the traced graphs of both tower kinds (an `int`
        # op from shape arithmetic), and converts the exported programs, dynamic batch included.
        program = torch.export.export(
            tower.module, (example,), dynamic_shapes={tower.input_name: {0: torch.export.Dim("batch")}}
        ).run_decompositions({})
        batch = ct.RangeDim(lower_bound=1, upper_bound=max_batch, default=1)
        # Core ML has no int64 inputs: token ids are int32 (ids < 49408).
        dtype = np.float32 if example.is_floating_point() else np.int32
        mlmodel = ct.convert(
            program, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.iOS17,
            inputs=[ct.TensorType(name=tower.input_name, shape=(batch, *example.shape[1:]), dtype=dtype)],
            outputs=[ct.TensorType(name=tower.output_name)],
        )
        path = os.path.join(output_dir, f"{name}.mlpackage")
        with scratch_folder(path) as staging:
            mlmodel.save(os.path.join(staging, "model.mlpackage"))  # coremltools wants the .mlpackage extension
            if os.path.exists(path):  # a folder: `os.replace` only replaces an empty one
                shutil.rmtree(path)
            os.replace(os.path.join(staging, "model.mlpackage"), path)
        files[name] = dict(file=os.path.basename(path), input=tower.input_name, output=tower.output_name,
                           coremltools_version=ct.__version__)
    config = _export_config(prepared, files, "coreml", model_dir)
    write_json(os.path.join(output_dir, CONFIG_NAME), config)
    return config


# --------------------------------------------------------------------------------------------------------------------
# Loading a model folder, and the command line


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def load_calibration_images(source: str, limit: int) -> list:
    """Up to `limit` images: the image files under a folder (sorted, recursive), or the `image` column of a local
    dataset (a parquet file, or a folder `datasets.load_dataset` reads)."""
    from PIL import Image

    from .image_processing_mobileclip import open_image, to_rgb

    if not os.path.exists(source):
        raise FileNotFoundError(f"Calibration images {source!r}: no such file or folder.")
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(source) for f in names
                   if f.lower().endswith(IMAGE_SUFFIXES)) if os.path.isdir(source) else []
    if files:
        return [to_rgb(open_image(f)) for f in files[:limit]]
    import datasets

    rows = (datasets.load_dataset("parquet", data_files=source, split="train") if source.endswith(".parquet")
            else datasets.load_dataset(source, split="train"))
    if "image" not in rows.column_names:
        raise ValueError(f"Calibration images {source!r}: no image files, and no `image` column ({rows.column_names})")
    return [to_rgb(image) if isinstance(image, Image.Image) else image
            for image in rows.select(range(min(limit, len(rows))))["image"]]


def calibration_inputs(model_dir: str, model, images: list, texts=DEFAULT_CALIBRATION_TEXTS) -> dict:
    """`export_onnx_int8`'s `pixel_values` and `input_ids`, preprocessed as the folder's processor does."""
    from .tokenization_mobileclip import MobileCLIPTokenizer

    vision_config, text_config = _tower_configs(model)
    inputs = {}
    if vision_config is not None:
        processor, _ = saved_image_processor(model, model_dir)
        if processor is None:
            raise ValueError(f"{model_dir!r} has no saved processor and no variant: cannot preprocess the calibration "
                             "images as the model expects")
        inputs["pixel_values"] = processor(images, return_tensors="pt")["pixel_values"]
    if text_config is not None:
        tokenizer = MobileCLIPTokenizer.from_pretrained(model_dir) if os.path.isfile(
            os.path.join(model_dir, "tokenizer_config.json")) else MobileCLIPTokenizer()
        inputs["input_ids"] = tokenizer(list(texts), padding="max_length", truncation=True, return_tensors="pt",
                                        max_length=text_config.max_position_embeddings)["input_ids"]
    return inputs


def export(model: MobileCLIPPreTrainedModel | str, output_dir: str, format: str = "onnx", **kwargs) -> dict:
    """Exports a model (or a saved model folder) in `format`, one of `SUPPORTED_FORMATS`; see `export_onnx`."""
    # Checked before a (slow) model load.
    if format not in SUPPORTED_FORMATS:
        raise ValueError(f"Unsupported export format {format!r}; supported formats: {', '.join(SUPPORTED_FORMATS)}.")
    if format == "coreml" and importlib.util.find_spec("coremltools") is None:
        raise ImportError(COREML_INSTALL_HINT)
    if format == "openvino" and importlib.util.find_spec("openvino") is None:
        raise ImportError(OPENVINO_INSTALL_HINT)
    if format == "openvino-int8" and not (importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf")):
        raise ImportError(OPENVINO_INT8_INSTALL_HINT)
    if format != "coreml" and "opset" in kwargs:
        check_opset(kwargs["opset"])
    if isinstance(model, str):
        kwargs.setdefault("model_dir", model)
        model = load_model(model, mobileclip_only=True)
    exporters = {"onnx": export_onnx, "onnx-int8": export_onnx_int8, "openvino": export_openvino,
                 "openvino-int8": export_openvino_int8, "coreml": export_coreml}
    return exporters[format](model, output_dir, **kwargs)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m modeling_mobileclip.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="folder of a saved MobileCLIP model (save_pretrained)")
    parser.add_argument("--format", default="onnx", help=f"one of: {', '.join(SUPPORTED_FORMATS)} (default onnx)")
    parser.add_argument("--output", required=True, help="folder to write the encoders and export_config.json to")
    parser.add_argument("--towers", nargs="+", choices=["image_encoder", "text_encoder"], help="default: all")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default %(default)s)")
    parser.add_argument("--exporter", choices=EXPORTERS, default="auto",
                        help="ONNX exporter; auto = dynamo, then TorchScript if that fails (default %(default)s)")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL, help="max abs diff allowed vs eager PyTorch")
    parser.add_argument("--calibration-images", help="int8 formats: a folder of real images, or a local dataset with "
                                                     "an `image` column, to calibrate (3/4) and check (1/4) on")
    parser.add_argument("--num-calibration-images", type=int, default=64, help="int8 formats (default %(default)s)")
    parser.add_argument("--calibration-texts", help="int8 formats: a text file of captions, one per line, to check the "
                                                    "text encoder on (default: built-in captions)")
    parser.add_argument("--min-cosine", type=float, default=INT8_MIN_COSINE,
                        help="int8 formats: least cosine similarity to float32 on held-out inputs (default "
                             "%(default)s)")
    args = parser.parse_args(argv)
    # Our progress at INFO; the exporter's own optimisation passes log hundreds of INFO lines, kept at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logger.setLevel(logging.INFO)

    kwargs = dict(towers=args.towers)
    if args.format != "coreml":  # every other format is exported to ONNX first
        kwargs.update(opset=args.opset, exporter=args.exporter, atol=args.atol)
    try:
        model = args.model
        if args.format.endswith("-int8"):
            if not args.calibration_images and args.towers != ["text_encoder"]:
                parser.error(f"--format {args.format} needs --calibration-images (real images to calibrate on)")
            check_opset(args.opset)
            model = load_model(args.model, mobileclip_only=True)
            images = load_calibration_images(args.calibration_images, args.num_calibration_images) \
                if args.calibration_images else []
            texts = DEFAULT_CALIBRATION_TEXTS
            if args.calibration_texts:
                with open(args.calibration_texts) as f:
                    texts = [line.strip() for line in f if line.strip()]
            kwargs.update(calibration_inputs(args.model, model, images, texts), min_cosine=args.min_cosine,
                          model_dir=args.model)
        config = export(model, args.output, format=args.format, **kwargs)
    except (ValueError, FileNotFoundError, ImportError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    logger.info("Exported %s to %s", ", ".join(config["files"]), args.output)
    return config


if __name__ == "__main__":
    main()


__all__ = [
    "EXPORTERS",
    "ImageEncoder",
    "SUPPORTED_FORMATS",
    "calibration_inputs",
    "export_onnx_int8",
    "load_calibration_images",
    "TextEncoder",
    "Tower",
    "check_opset",
    "encoders",
    "export",
    "export_coreml",
    "export_onnx",
    "export_openvino",
    "export_openvino_int8",
    "graph_opset",
    "openvino_model",
    "ort_session",
    "preprocessing_info",
    "supported_opsets",
    "verify_onnx",
    "verify_openvino",
]
