"""Training throughput: reinforced vs plain CLIP vs online distillation, same student and batch; data pipeline
samples per CPU-second of one loader worker. Prints a table, writes JSON and markdown. Run from the repository root:

    python -m benchmarks.train_throughput                                 # CPU: S0 student, batch 16, B teachers
    python -m benchmarks.train_throughput --device cuda --batch-size 256 --teacher mobileclip-l14 --mixed-precision bf16
    python -m benchmarks.train_throughput --data-only                     # re-measure the data pipeline alone

Each recipe runs `train/train.py`'s `training_function` (data loading, forward, loss, backward, AdamW step: what a
user's run does) for `--warmup + --steps` optimizer steps and reports the median of the logged per-step samples/s
after the warm-up. The data is a DataCompDR-shaped reinforced dataset of synthetic 400x300 JPEGs (K=30 stored
augmentations, N=5 synthetic captions, two 768-d teachers), written by dataset_builder. Online distillation runs two
`--teacher` models live on the same augmented images (the paper's teachers are two ViT-L/14 CLIPs:
`mobileclip-l14` has that image and text tower). The data pipeline is timed alone, without a model: one DataLoader
worker per recipe, exact and with each of the fast replay options (`DATA_VARIANTS`), in samples per CPU-second of the
worker process (user + system time from its first batch to its last, over `--data-epochs` epochs of a dataset of its
own, `--data-images` long): on a shared machine wall time measures the other processes as much as the loader, and a
worker forked anew for each epoch prepares its first batches slowly, which a real epoch amortises (epochs of 128
images measured 10-25% slower than epochs of 512 here). The variants are measured in turn, `--data-rounds` times,
and each figure is the median of its rounds: on a shared virtual machine the CPU time of the same work varies by 10-15%
from one minute to the next. `--data-only` measures only that and keeps the training figures of `--out`.
"""

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time

import psutil
import torch
from accelerate import PartialState

from benchmarks.common import device_name, reinforced_dataset, write_results
from benchmarks.harness import memory_probe
from dataset_builder.augment import decompress
from modeling_mobileclip import VARIANTS, load_model_and_processor, normalize_variant
from train.data import ImageSpec, SourceImage, dct_scale, load_train_dataset
from train.train import TrainConfig, build_train_data, load_teachers, training_function

RECIPES = ("reinforced", "clip", "online_distill")
# The data pipeline's replay: exact (the builder's pixels), and with the options that trade exactness for speed.
DATA_VARIANTS = {
    "exact": {},
    "fast_jpeg_decode": {"fast_jpeg_decode": True},
    "fast_resize": {"fast_resize": True},
    "fast_resize + fast_jpeg_decode": {"fast_resize": True, "fast_jpeg_decode": True},
}


def teacher_folder(teacher: str, work: str) -> str:
    """`--teacher` as train.py's `teacher_models` take it: a folder or Hub id as is, a variant name (the default) as a
    randomly initialised model saved in `work` (train.py loads teachers with their weights; throughput does not
    depend on them)."""
    if os.path.exists(teacher) or normalize_variant(teacher) not in VARIANTS:
        return teacher
    folder = os.path.join(work, "teacher")
    model, processor = load_model_and_processor(teacher, random_init=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def run_config(recipe: str, data: str, args, work: str, teacher: str) -> TrainConfig:
    """The short training run of one recipe, logging every step."""
    return TrainConfig(
        model=args.student, recipe=recipe, train_dataset=data, global_batch_size=args.batch_size,
        train_steps=args.warmup + args.steps, warmup_steps=1, num_workers=args.num_workers,
        mixed_precision=args.mixed_precision, teacher_models=[teacher] * 2 if recipe == "online_distill" else [],
        output_dir=os.path.join(work, recipe), report_to=["none"], log_every=1, save_every=0, save_total_limit=1,
    )


def train_samples_per_s(cfg: TrainConfig, args) -> dict:
    """Median per-step samples/s of a short `training_function` run (after `args.warmup` steps), and the run's peak
    memory (`harness.memory_probe`: on CUDA the allocator's peak, on CPU the resident high-water mark over the run,
    loader workers not included)."""
    start = time.perf_counter()
    peak_mb = memory_probe(args.device)(lambda: training_function(cfg))
    with open(os.path.join(cfg.output_dir, "metrics.jsonl")) as f:
        rates = [r["train/samples_per_second"] for r in map(json.loads, f) if "train/samples_per_second" in r]
    rates = rates[args.warmup:]
    return {"samples_per_s": statistics.median(rates), "min": min(rates), "max": max(rates), "steps": len(rates),
            "wall_s": time.perf_counter() - start, "peak_memory_mb": None if peak_mb is None else round(peak_mb)}


def data_samples_per_cpu_s(cfg: TrainConfig, epochs: int) -> float:
    """Samples per CPU-second of one DataLoader worker of train.py's own loader (decode, replay or crop, tokenise,
    collate uint8 pixels into shared memory; their float conversion is the training step's), no model step: the
    worker's user + system time from its first batch (start-up and lazy imports excluded) to its last, summed over
    `epochs` epochs (each a new worker)."""
    cfg = dataclasses.replace(cfg, num_workers=1)
    _, processor = load_model_and_processor(cfg.model, random_init=True)
    _, teacher_spec, teacher_tokenize = load_teachers(cfg, "cpu") if cfg.recipe == "online_distill" else (None,) * 3
    loader, _ = build_train_data(cfg, PartialState(), processor, cfg.global_batch_size, teacher_spec, teacher_tokenize)
    samples, cpu_s = 0, 0.0
    for epoch in range(epochs):
        loader.dataset.set_epoch(epoch)
        others = {p.pid for p in psutil.Process().children()}
        batches = iter(loader)
        next(batches)
        (worker,) = [p for p in psutil.Process().children() if p.pid not in others]
        start = end = sum(worker.cpu_times()[:2])
        for batch in batches:
            samples += len(batch["pixel_values"])
            end = sum(worker.cpu_times()[:2])  # read while the worker is alive: it exits after the last batch
        cpu_s += end - start
    if cpu_s <= 0:  # the process clock ticks in 10 ms: a few tiny batches can take "no" time
        raise SystemExit(f"the data pipeline's {samples} timed samples took no measurable CPU time: raise "
                         "--data-images or --data-epochs")
    return samples / cpu_s


def reducible_fraction(data: str, image_size: int) -> float:
    """The fraction of the stored augmentations whose crop box allows `fast_jpeg_decode` a reduced decode at the
    student's `image_size` (`train.data.dct_scale`)."""
    rows = load_train_dataset(data, "train", "reinforced", False, 0, 1, 0, 1)
    scales = []
    for row in rows:
        image = SourceImage(row["image"], reduce=True)
        scales += [dct_scale(decompress(p).crop, (image.height, image.width), image_size)
                   for p in json.loads(row["aug_params"])]
    return sum(s > 1 for s in scales) / len(scales)


def markdown(result: dict) -> str:
    a = result["args"]
    precision = "fp32" if a["mixed_precision"] == "no" else a["mixed_precision"]
    lines = [f"Student `{a['student']}`, batch {a['batch_size']}, {precision}, {a['num_workers']} "
             f"loader workers; online teachers: 2 x `{a['teacher']}`; {result['device']}.", "",
             "| recipe | training samples/s (median) | min-max | peak memory MiB | "
             + " | ".join(f"data pipeline samples per worker CPU-second: {v}" if v == "exact" else f"`{v}`"
                          for v in DATA_VARIANTS) + " |",
             "|---|---|---|---|" + "---|" * len(DATA_VARIANTS)]
    for recipe in a["recipes"]:
        t, d = result["train"][recipe], result["data_per_worker"].get(recipe, {})
        peak = t.get("peak_memory_mb")  # absent from results written before it was measured
        lines.append(f"| {recipe} | {t['samples_per_s']:.1f} | {t['min']:.1f}-{t['max']:.1f} | "
                     f"{'-' if peak is None else peak} | "
                     + " | ".join(f"{d[v]:.1f}" if v in d else "-" for v in DATA_VARIANTS) + " |")
    lines += ["", "Peak memory: " + ("the CUDA allocator's peak" if result["device"] != device_name("cpu") else
                                     "the process's resident high-water mark (loader workers not included)")
              + " during the training run, model and optimizer included."]
    if result["data_per_worker"]:
        lines += [f"Data pipeline: one loader worker, its CPU time over {result['data_epochs']} epochs of "
                  f"{result['data_images']} images, median of {result['data_rounds']} interleaved rounds (min-max in "
                  "the JSON); `fast_jpeg_decode` could reduce the decode of "
                  f"{100 * result['reducible_crops']:.0f}% of the stored crops at the student's resolution."]
    return "\n".join(lines) + "\n"


def stored_result(args, out: str) -> dict:
    """The results of an earlier full run at `out`, whose training figures a `--data-only` run keeps."""
    with open(out) as f:
        result = json.load(f)
    same = ("student", "teacher", "batch_size", "mixed_precision", "num_workers", "warmup", "steps", "k", "n")
    if differing := [k for k in same if result["args"].get(k) != vars(args)[k]]:
        raise SystemExit(f"--data-only: {out} was run with other {differing}; run the full benchmark instead")
    if missing := [r for r in args.recipes if r not in result["train"]]:
        raise SystemExit(f"--data-only: {out} has no training figures of {missing}")
    return {**result, "args": {**result["args"], "recipes": args.recipes}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--student", default="mobileclip-s0")
    p.add_argument("--teacher", default="mobileclip-b", help="online distillation: a variant name or model folder")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    p.add_argument("--num-workers", type=int, default=1, help="DataLoader workers of the training runs")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--recipes", nargs="+", choices=RECIPES, default=list(RECIPES))
    p.add_argument("--data-epochs", type=int, default=2, help="epochs of one data-pipeline measurement")
    p.add_argument("--data-images", type=int, default=512, help="images of the data-pipeline measurement's dataset")
    p.add_argument("--data-rounds", type=int, default=3,
                   help="interleaved rounds of the data-pipeline variants (0: training figures only)")
    p.add_argument("--data-only", action="store_true", help="measure the data pipeline only; keep --out's training")
    p.add_argument("--data-dir", help="build the training runs' dataset here and reuse it on later runs of the same "
                   "--batch-size, --warmup, --steps, --k and --n (dataset_builder resumes it), e.g. across students")
    p.add_argument("--out", default="benchmarks/results/train_cpu.json")
    args = p.parse_args()
    if args.data_rounds < 0 or (args.data_only and args.data_rounds == 0):
        p.error(f"--data-rounds must be >= 0, and >= 1 with --data-only (got {args.data_rounds})")
    if args.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"  # accelerate would take a visible GPU otherwise
    num_images = args.batch_size * (args.warmup + args.steps + 1)
    result = stored_result(args, args.out) if args.data_only else {
        "device": device_name(args.device), "torch": torch.__version__, "args": vars(args), "train": {}}
    result.update(data_per_worker={}, data_per_worker_rounds={}, data_epochs=args.data_epochs,
                  data_rounds=args.data_rounds,
                  num_images=num_images, data_images=args.data_images,
                  data_unit="samples per CPU-second of one DataLoader worker")
    with tempfile.TemporaryDirectory() as work:
        data, data_pipeline = args.data_dir or os.path.join(work, "data"), os.path.join(work, "data_pipeline")
        if not args.data_only:  # the training runs' dataset
            report = reinforced_dataset(data, num_images, args.k, args.n, num_workers=os.cpu_count() or 1)
        if args.data_rounds:
            report = reinforced_dataset(data_pipeline, args.data_images, args.k, args.n,
                                        num_workers=os.cpu_count() or 1)
            _, processor = load_model_and_processor(args.student, random_init=True)
            student = ImageSpec.from_image_processor(processor.image_processor)
            result["reducible_crops"] = reducible_fraction(data_pipeline, student.size)
        result["bytes_per_sample"] = report["storage"]["bytes_per_sample"]
        teacher = teacher_folder(args.teacher, work) if "online_distill" in args.recipes else args.teacher
        for recipe in args.recipes:
            cfg = run_config(recipe, data, args, work, teacher)
            if args.data_rounds:
                rounds = {variant: [] for variant in DATA_VARIANTS}
                for _ in range(args.data_rounds):
                    for variant, options in DATA_VARIANTS.items():
                        rounds[variant].append(data_samples_per_cpu_s(
                            dataclasses.replace(cfg, train_dataset=data_pipeline, **options), args.data_epochs))
                result["data_per_worker_rounds"][recipe] = rounds
                result["data_per_worker"][recipe] = {v: statistics.median(r) for v, r in rounds.items()}
            if not args.data_only:
                result["train"][recipe] = train_samples_per_s(cfg, args)
            print(f"{recipe}: {result['train'][recipe]['samples_per_s']:.1f} samples/s training; per data worker "
                  "CPU-second: " + (", ".join(f"{value:.1f} samples {variant}" for variant, value in
                                              result["data_per_worker"].get(recipe, {}).items()) or "not measured"),
                  flush=True)
    write_results(result, markdown(result), args.out)


if __name__ == "__main__":
    main()
