"""Inference latency of MobileCLIP in this package, side by side with the reference implementations.

For each variant, three groups are timed: the image tower, the text tower (77 tokens) and the whole model (images +
texts, e.g. 1 image + 1 text). Candidates, all on the same weights where the code allows it:

* ours: train-time form (multi-branch), re-parameterised eager (`from_pretrained(...).reparameterize().eval()`),
  `optimize_for_inference` at the run's precision (channels-last image activations outside float32),
  `torch.compile` of the re-parameterised model (`--compile`), and the exported ONNX graphs under onnxruntime
  (float32 and int8) and OpenVINO (float32 and NNCF's int8, at the run's precision, where openvino and nncf are
  installed);
* Apple's `mobileclip` package (v1 S0/S1/S2/B), re-parameterised with its own `reparameterize_model`;
* open_clip, as built and re-parameterised (`timm.utils.reparameterize_model`);
* timm's image tower (`num_classes` = projection dim), re-parameterised;
* transformers' `CLIPModel` ViT-B/16 (random init), the paper's yardstick, in the whole-model group.

The reference is built with random weights and random BatchNorm statistics (so that fusion is real); our model is
converted from its state dict with `convert_checkpoint`, and timm's tower loads our image-tower weights. Timing is
interleaved (`harness.interleaved`): medians, IQR, min-max, and per-round (paired) ratios to our re-parameterised
eager model; rounds slower than 1.5x the fastest round (another process took the CPU) are discarded and re-run. Peak
memory is the resident-set high-water mark during one call (`harness.peak_rss_delta_mb`; on CUDA,
`torch.cuda.max_memory_allocated`). The goals are judged and the table written by `latency_report`.

Run from the repository root, as a module:

    python -m benchmarks.latency --variants mobileclip-s2 mobileclip-s0 --batch-sizes 1 16 [--compile]
    python -m benchmarks.latency --variants mobileclip-s2 --update   # re-run one variant of the saved results
    python -m benchmarks.latency --smoke --output /tmp/latency.json   # tiny models, 2 rounds, CI
"""

import argparse
import copy
import datetime
import gc
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.harness import interleaved, memory_probe, ratios, summarize, write_results
from benchmarks.latency_report import OURS_REPARAM, YARDSTICK, evaluate_goals, markdown
from modeling_mobileclip.configuration_mobileclip import VARIANTS, MobileCLIPConfig
from modeling_mobileclip.convert import APPLE_REFERENCE, OPEN_CLIP_REFERENCE, convert_checkpoint
from modeling_mobileclip.example_inputs import example_input_ids, example_pixel_values
from modeling_mobileclip.export import (
    ImageEncoder,
    TextEncoder,
    export_onnx,
    export_onnx_int8,
    export_openvino_int8,
    openvino_model,
    ort_session,
)
from modeling_mobileclip.inference import optimize_for_inference
from modeling_mobileclip.modeling_mobileclip import MobileCLIPModel
from modeling_mobileclip.testing_utils import randomize_, tiny_config

DEFAULT_VARIANTS = ["mobileclip-s0", "mobileclip-s1", "mobileclip-s2", "mobileclip-b", "mobileclip2-s0",
                    "mobileclip2-s2", "mobileclip2-b"]
# `--smoke` models, with every block type: MCi + MCt, and ViT + causal transformer; 77 tokens, as released models.
SMOKE_CONFIGS = {
    "tiny-mci-mct": dict(text_tower="mct", context_length=77),
    "tiny-vit": dict(architecture="vit_large_patch14_clip_224", causal=True, context_length=77),
}
SMOKE_VARIANTS = list(SMOKE_CONFIGS)
TOWERS = ("image", "text", "model")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# OpenVINO's CPU inference precision at each of the run's precisions (no float16 on CPUs without AVX512-FP16).
OPENVINO_PRECISION_OF_DTYPE = {"fp32": "f32", "bf16": "bf16"}


@dataclass
class Candidate:
    fn: Callable[[], object]
    params: int


# --------------------------------------------------------------------------------------------------------------------
# Models


def n_params(*modules: torch.nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def clip_vit_b16(smoke: bool):
    """transformers' CLIP ViT-B/16 (random init); a tiny one in smoke mode."""
    from transformers import CLIPConfig, CLIPModel

    if smoke:
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, patch_size=16,
                      image_size=64)
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
    else:
        text = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
        vision = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      patch_size=16, image_size=224)
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=512)
    return CLIPModel(config).eval()


def timm_tower(ours: MobileCLIPModel):
    """timm's image tower as open_clip builds it (classifier head = projection), with our image-tower weights."""
    import timm
    from timm.utils.model import reparameterize_model

    vision_config = ours.config.vision_config
    kwargs = dict(vision_config.model_args or {})
    if vision_config.architecture.startswith("vit_"):
        kwargs.setdefault("img_size", vision_config.image_size)
    model = timm.create_model(vision_config.architecture, num_classes=vision_config.projection_dim, **kwargs)
    state = {k.removeprefix("vision_model."): v for k, v in ours.state_dict().items() if k.startswith("vision_model.")}
    head = "head.fc" if "head.fc.weight" in model.state_dict() else "head"
    state.update({f"{head}.weight": ours.visual_projection.weight, f"{head}.bias": ours.visual_projection.bias})
    model.load_state_dict(state, strict=True)
    return reparameterize_model(model.eval())


def build_models(variant: str, smoke: bool) -> tuple[dict, dict]:
    """Our model (train-time and fused) and the importable references of one variant; and notes for the report."""
    models, notes = {}, {}
    if smoke:
        ours = randomize_(MobileCLIPModel(tiny_config(**SMOKE_CONFIGS[variant])))
        notes["references"] = "smoke: Apple and open_clip references are full-size only and skipped"
    else:
        try:
            import mobileclip
            from mobileclip.modules.common.mobileone import reparameterize_model as apple_reparameterize

            if variant in APPLE_REFERENCE:
                apple = mobileclip.create_model_and_transforms(APPLE_REFERENCE[variant], pretrained=None,
                                                               reparameterize=False)[0]
                models["apple"] = randomize_(apple)
                models["apple reparam"] = apple_reparameterize(apple).eval()
        except ImportError:
            notes["apple"] = "mobileclip (Apple's package) not importable"
        try:
            import open_clip
            from timm.utils.model import reparameterize_model

            if variant in OPEN_CLIP_REFERENCE:
                models["open_clip as built"] = randomize_(open_clip.create_model(OPEN_CLIP_REFERENCE[variant]))
                models["open_clip reparam"] = reparameterize_model(models["open_clip as built"]).eval()
        except ImportError:
            notes["open_clip"] = "open_clip not importable"
        source = models.get("apple", models.get("open_clip as built"))
        if source is None:
            ours = randomize_(MobileCLIPModel(MobileCLIPConfig.from_variant(variant)))
            notes["weights"] = "no reference importable: random weights"
        else:
            ours = convert_checkpoint(variant, source.state_dict(), verify_reference=False)
            notes["weights"] = f"converted from {'Apple' if 'apple' in models else 'open_clip'}'s model"
        models.pop("apple", None)  # only the re-parameterised form is timed
    models["ours train-time"] = ours.eval()
    models[OURS_REPARAM] = copy.deepcopy(ours).reparameterize().eval()
    models["ours fast"] = copy.deepcopy(models[OURS_REPARAM])  # optimize_for_inference'd in benchmark_variant
    models["timm reparam"] = timm_tower(ours)
    return models, notes


# --------------------------------------------------------------------------------------------------------------------
# Candidates


def make_inputs(config: MobileCLIPConfig, batch: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Images in [0, 1] and full-length token sequences (start token, random ids, end token last)."""
    pixel_values = example_pixel_values(config.vision_config, batch, seed=batch)
    length = config.text_config.max_position_embeddings
    input_ids = example_input_ids(config.text_config, batch, seed=batch, ends=[length - 1] * batch)
    return pixel_values.to(device, dtype), input_ids.to(device)


def tower_params(model: MobileCLIPModel) -> dict[str, int]:
    image = n_params(model.vision_model, model.visual_projection)
    return dict(image=image, text=n_params(model) - image - 1, model=n_params(model))


def reference_candidates(name: str, model, pixel_values, input_ids) -> dict[str, Candidate]:
    """The image/text/model candidates of an Apple or open_clip model (both have `encode_image` / `encode_text`)."""
    image_tower = model.image_encoder if name.startswith("apple") else model.visual
    image_params, total = n_params(image_tower), n_params(model)
    return dict(
        image=Candidate(lambda: model.encode_image(pixel_values), image_params),
        text=Candidate(lambda: model.encode_text(input_ids), total - image_params - 1),
        model=Candidate(lambda: model(pixel_values, input_ids), total),
    )


def build_candidates(models: dict, clip_model, onnx_dir: str | None, batch: int, args, setup: dict) -> dict:
    """tower -> candidate name -> Candidate, for one batch size."""
    ours, fused = models["ours train-time"], models[OURS_REPARAM]
    device, dtype = args.device, DTYPES[args.dtype]
    pixel_values, input_ids = make_inputs(ours.config, batch, device, dtype)
    groups = {tower: {} for tower in TOWERS}
    fused_params = tower_params(fused)
    for name, model in (("ours train-time", ours), (OURS_REPARAM, fused), ("ours fast", models["ours fast"])):
        params = tower_params(model)
        groups["image"][name] = Candidate(lambda m=model: m.get_image_features(pixel_values), params["image"])
        groups["text"][name] = Candidate(lambda m=model: m.get_text_features(input_ids), params["text"])
        groups["model"][name] = Candidate(lambda m=model: m(input_ids=input_ids, pixel_values=pixel_values),
                                          params["model"])

    def add_encoders(name: str, run_image: Callable, run_text: Callable) -> None:
        """A separately run image and text encoder: their own groups, and both in turn as the whole model."""
        groups["image"][name] = Candidate(run_image, fused_params["image"])
        groups["text"][name] = Candidate(run_text, fused_params["text"])
        groups["model"][name] = Candidate(lambda: (run_image(), run_text()), fused_params["model"])

    if args.compile:
        setup["compile_mode"] = args.compile_mode
        image_fn = torch.compile(ImageEncoder(fused).eval(), dynamic=False, mode=args.compile_mode)
        text_fn = torch.compile(TextEncoder(fused).eval(), dynamic=False, mode=args.compile_mode)
        for tower, fn, x in (("image", image_fn, pixel_values), ("text", text_fn, input_ids)):
            start = time.perf_counter()
            fn(x)  # compiles for this shape
            setup[f"compile_s_{tower}_batch_{batch}"] = round(time.perf_counter() - start, 1)
        add_encoders("ours compile", lambda: image_fn(pixel_values), lambda: text_fn(input_ids))
    if onnx_dir is not None:
        pixels_np, ids_np = pixel_values.float().cpu().numpy(), input_ids.cpu().numpy()
        sessions = {"ours onnxruntime": ("", ".onnx")}
        if os.path.isdir(os.path.join(onnx_dir, "int8")):
            sessions["ours onnxruntime int8"] = ("int8", ".onnx")
        for name, (folder, suffix) in sessions.items():
            image, text = (ort_session(os.path.join(onnx_dir, folder, tower + suffix), args.threads)
                           for tower in ("image_encoder", "text_encoder"))
            add_encoders(name, lambda image=image: image.run(None, {"pixel_values": pixels_np}),
                         lambda text=text: text.run(None, {"input_ids": ids_np}))
        # OpenVINO compiles the same float32 graphs (as `export --format openvino` converts them) and NNCF's int8 ones,
        # computing in the run's precision where not int8.
        compiled = {}
        if args.dtype in OPENVINO_PRECISION_OF_DTYPE and importlib.util.find_spec("openvino") is not None:
            compiled["ours openvino"] = ("", ".onnx")
            if os.path.isdir(os.path.join(onnx_dir, "openvino-int8")):
                compiled["ours openvino int8"] = ("openvino-int8", ".xml")
        for name, (folder, suffix) in compiled.items():
            image, text = (openvino_model(os.path.join(onnx_dir, folder, tower + suffix),
                                          OPENVINO_PRECISION_OF_DTYPE[args.dtype], args.threads)
                           for tower in ("image_encoder", "text_encoder"))
            # What OpenVINO computes in (it falls back to f32 where the CPU lacks bf16).
            setup["openvino"] = dict(precision=image.get_property("INFERENCE_PRECISION_HINT").to_string())
            add_encoders(name, lambda image=image: image(pixels_np), lambda text=text: text(ids_np))
    for name in ("apple reparam", "open_clip as built", "open_clip reparam"):
        if name in models:
            for tower, candidate in reference_candidates(name, models[name], pixel_values, input_ids).items():
                # open_clip's text tower has nothing to fuse: its re-parameterised text candidate would be a duplicate.
                if not (name == "open_clip reparam" and tower == "text"):
                    groups[tower][name] = candidate
    timm_model = models["timm reparam"]
    groups["image"]["timm reparam"] = Candidate(lambda: timm_model(pixel_values), n_params(timm_model))
    if clip_model is not None:
        size = clip_model.config.vision_config.image_size
        clip_pixels = torch.rand(batch, 3, size, size).to(device, dtype)
        clip_ids = input_ids.clamp(max=clip_model.config.text_config.vocab_size - 1)
        groups["model"][YARDSTICK] = Candidate(lambda: clip_model(input_ids=clip_ids, pixel_values=clip_pixels),
                                               n_params(clip_model))
    return {tower: groups[tower] for tower in args.towers}


def drop_references_that_fail(models: dict, device, dtype, setup: dict) -> None:
    """Removes the references that cannot run at this precision (Apple's text encoder, for one, mixes float32
    parameters into bfloat16 LayerNorms on CPU), with the error in the report."""
    pixel_values, input_ids = make_inputs(models[OURS_REPARAM].config, 1, device, dtype)
    for name in ("apple reparam", "open_clip as built", "open_clip reparam"):
        if name in models:
            try:
                models[name].encode_text(input_ids), models[name].encode_image(pixel_values)
            except RuntimeError as error:
                setup[f"{name} skipped"] = f"fails in {dtype}: {error}"
                del models[name]


@torch.no_grad()
def parity(models: dict, variant: str, device, dtype) -> dict[str, float]:
    """Max abs difference of our embeddings from the reference we converted from (same weights => same function)."""
    source = models.get("apple reparam", models.get("open_clip as built"))
    if source is None:
        return {}
    pixel_values, input_ids = make_inputs(models[OURS_REPARAM].config, 2, device, dtype)
    out = {}
    for name in ("ours train-time", OURS_REPARAM):
        model = models[name]
        out[f"{name} text"] = (model.get_text_features(input_ids).pooler_output
                               - source.encode_text(input_ids)).abs().max().item()
        # open_clip's v1 MobileCLIP-B image tower pads its stem differently from Apple's (see configuration).
        if not (variant == "mobileclip-b" and "apple reparam" not in models):
            out[f"{name} image"] = (model.get_image_features(pixel_values).pooler_output
                                    - source.encode_image(pixel_values)).abs().max().item()
    return out


# --------------------------------------------------------------------------------------------------------------------
# Running


def run_group(candidates: dict[str, Candidate], rounds: int, args) -> dict:
    fns = {name: c.fn for name, c in candidates.items()}
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    load_before = os.getloadavg()[0]
    times, discarded = interleaved(fns, rounds=rounds, warmup=args.warmup, seed=args.seed, sync=sync,
                                   burst_factor=args.burst_factor, max_extra_rounds=int(rounds * args.max_extra_rounds))
    # The 1-minute load average around the group: above the thread count, other processes competed for the CPU.
    result = {"load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
              "rounds_discarded_as_bursts": discarded, "candidates": {}}
    probe = memory_probe(args.device)
    for name, candidate in candidates.items():
        peak = probe(candidate.fn)
        result["candidates"][name] = dict(
            summarize(times[name]), params_m=candidate.params / 1e6,
            peak_mem_delta_mb=None if peak is None else round(peak, 1),
            times_ms=[round(t * 1e3, 3) for t in times[name]],
        )
    if OURS_REPARAM in times:
        result["ratios_vs_ours_reparam"] = ratios(times, OURS_REPARAM)
    return result


def export_ours(fused: MobileCLIPModel, directory: str, args, setup: dict) -> str | None:
    """float32 graphs in `directory`, int8 ones in `directory/int8` (timing only: random weights calibrated on random
    pixels say nothing of int8 accuracy, which benchmarks/precision.py measures on real images)."""
    if args.device == "cuda" or args.no_onnx:
        setup["onnx"] = "skipped (--no-onnx)" if args.no_onnx else "skipped: onnxruntime CPU only"
        return None
    try:
        start = time.perf_counter()
        info = export_onnx(fused, directory, exporter=args.exporter)
        setup["onnx"] = dict(export_and_verify_s=round(time.perf_counter() - start, 1),
                             **{name: dict(exporter=f["exporter"], max_abs_diff=f["max_abs_diff"])
                                for name, f in info["files"].items()})
        if not args.no_int8:
            config = fused.config
            calibration = dict(exporter=args.exporter, min_cosine=-1.0,
                               pixel_values=example_pixel_values(config.vision_config, 8),
                               input_ids=example_input_ids(config.text_config, 8))
            export_onnx_int8(fused, os.path.join(directory, "int8"), **calibration)
            if importlib.util.find_spec("nncf") is not None:
                export_openvino_int8(fused, os.path.join(directory, "openvino-int8"), **calibration)
    except ImportError as error:
        setup["onnx"] = f"skipped: {error}"
        return None
    return directory


def benchmark_variant(variant: str, clip_model, args) -> dict:
    print(f"[{variant}] building models", file=sys.stderr, flush=True)
    models, notes = build_models(variant, args.smoke)
    device, dtype = args.device, DTYPES[args.dtype]
    setup = dict(notes)
    with tempfile.TemporaryDirectory() as onnx_dir:
        onnx_dir = export_ours(models[OURS_REPARAM], onnx_dir, args, setup)
        for name, model in models.items():
            models[name] = model.to(device, dtype)
        models["ours fast"] = optimize_for_inference(models["ours fast"], device, dtype)
        with torch.inference_mode():
            drop_references_that_fail(models, device, dtype, setup)
            setup["parity_max_abs_diff"] = parity(models, variant, device, dtype)
            result = {"setup": setup}
            for batch in args.batch_sizes:
                rounds = args.rounds if batch == 1 else args.batched_rounds
                groups = build_candidates(models, clip_model, onnx_dir, batch, args, setup)
                for tower, candidates in groups.items():
                    print(f"[{variant}] batch {batch} {tower}: {len(candidates)} candidates x {rounds} rounds",
                          file=sys.stderr, flush=True)
                    result.setdefault(f"batch_{batch}", {})[tower] = run_group(candidates, rounds, args)
                del groups
    del models
    gc.collect()
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", help=f"default: {' '.join(DEFAULT_VARIANTS)}")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 16])
    parser.add_argument("--towers", nargs="+", choices=TOWERS, default=list(TOWERS))
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds at batch 1")
    parser.add_argument("--batched-rounds", type=int, default=5, help="timed rounds at batch sizes > 1")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--burst-factor", type=float, default=1.5,
                        help="discard rounds slower than this multiple of the fastest round (0: keep all)")
    parser.add_argument("--max-extra-rounds", type=float, default=1.0,
                        help="extra rounds allowed to replace discarded ones, as a multiple of --rounds")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--compile-mode", choices=("default", "reduce-overhead", "max-autotune"), default=None,
                        help="torch.compile's mode (default: reduce-overhead, i.e. with CUDA graphs, on CUDA; "
                             "default on CPU)")
    parser.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime candidates")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 onnxruntime and OpenVINO candidates")
    parser.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default=None,
                        help="ONNX exporter (default: auto; torchscript in --smoke, which is faster to export)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default fp32 on CPU, fp16 on CUDA")
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny models and 2 rounds: checks that the script runs")
    parser.add_argument("--output", help="JSON file (a .md table is written beside it); "
                                         "default benchmarks/results/latency_<device>.json, none with --smoke")
    parser.add_argument("--update", action="store_true",
                        help="keep the other variants already in --output and replace those measured now (to re-run "
                             "a variant whose run was disturbed); each variant records the run it came from")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    if args.smoke:
        args.variants = args.variants or SMOKE_VARIANTS
        args.rounds = args.batched_rounds = 2
        args.warmup = 1
        args.burst_factor = 0  # tiny calls jitter by more than 1.5x: keep every round
        args.exporter = args.exporter or "torchscript"
        # Tiny ops on 2 threads spend their time in OpenMP barriers when the machine is busy: 1 thread is faster.
        args.threads = args.threads or 1
        args.batch_sizes = [1, 2] if args.batch_sizes == [1, 16] else args.batch_sizes
    args.burst_factor = args.burst_factor or None
    args.variants = args.variants or DEFAULT_VARIANTS
    valid = SMOKE_VARIANTS if args.smoke else list(VARIANTS)
    unknown = [v for v in args.variants if v not in valid]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}{' in --smoke' if args.smoke else ''}; choose from {valid}")
    args.exporter = args.exporter or "auto"
    args.dtype = args.dtype or ("fp16" if args.device == "cuda" else "fp32")
    args.compile_mode = args.compile_mode or ("reduce-overhead" if args.device == "cuda" else "default")
    args.threads = args.threads or torch.get_num_threads()
    if args.output is None and not args.smoke:
        args.output = str(Path(__file__).resolve().parent / "results" / f"latency_{args.device}.json")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    meta = dict(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), argv=sys.argv[1:],
        device=torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(), threads=args.threads, dtype=args.dtype, torch=torch.__version__,
        python=platform.python_version(), smoke=args.smoke, rounds=args.rounds, batched_rounds=args.batched_rounds,
        warmup=args.warmup, burst_factor=args.burst_factor, load_average_start=os.getloadavg(),
    )
    clip_model = clip_vit_b16(args.smoke).to(args.device, DTYPES[args.dtype]) if "model" in args.towers else None
    results = {}
    for variant in args.variants:
        results[variant] = benchmark_variant(variant, clip_model, args)
    meta["load_average_end"] = os.getloadavg()
    for result in results.values():
        result["setup"]["run"] = {k: meta[k] for k in ("date", "argv", "load_average_start")}
    if args.update and args.output and os.path.exists(args.output):
        with open(args.output) as f:
            previous = json.load(f)
        results = {**previous["results"], **results}  # replaced variants keep their place
        meta["updated_from"] = previous["meta"]
    goals = evaluate_goals(results)
    report = dict(meta=meta, results=results, goals=goals)
    table = markdown(results, goals, meta)
    if args.output:
        write_results(report, table, args.output)
    else:
        print(table)
    return report


if __name__ == "__main__":
    main()


__all__ = ["SMOKE_CONFIGS", "build_candidates", "build_models", "main"]
