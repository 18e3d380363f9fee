"""Training throughput: reinforced vs plain CLIP vs online distillation, same student and batch; data pipeline
samples/s per worker. Prints a table, writes JSON and markdown. Run from the repository root:

    python -m benchmarks.train_throughput                                 # CPU: S0 student, batch 16, B teachers
    python -m benchmarks.train_throughput --device cuda --batch-size 256 --teacher mobileclip-l14 --mixed-precision bf16

Each recipe runs `train/train.py`'s `training_function` (data loading, forward, loss, backward, AdamW step: what a
user's run does) for `--warmup + --steps` optimizer steps and reports the median of the logged per-step samples/s
after the warm-up. The data is a DataCompDR-shaped reinforced dataset of synthetic 400x300 JPEGs (K=30 stored
augmentations, N=5 synthetic captions, two 768-d teachers), written by dataset_builder. Online distillation runs two
`--teacher` models live on the same augmented images (the paper's teachers are two ViT-L/14 CLIPs:
`mobileclip-l14` has that image and text tower). The data pipeline is timed alone, without a model: one DataLoader
worker, samples/s, per recipe.
"""

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time

import torch
from accelerate import PartialState

from benchmarks.common import device_name, reinforced_dataset, write_results
from modeling_mobileclip import load_model_and_processor
from train.train import TrainConfig, build_train_data, load_teachers, training_function

RECIPES = ("reinforced", "clip", "online_distill")


def run_config(recipe: str, data: str, args, work: str) -> TrainConfig:
    """The short training run of one recipe, logging every step."""
    return TrainConfig(
        model=args.student, recipe=recipe, train_dataset=data, global_batch_size=args.batch_size,
        train_steps=args.warmup + args.steps, warmup_steps=1, num_workers=args.num_workers,
        mixed_precision=args.mixed_precision, teacher_models=[args.teacher] * 2 if recipe == "online_distill" else [],
        output_dir=os.path.join(work, recipe), report_to=["none"], log_every=1, save_every=0, save_total_limit=1,
    )


def train_samples_per_s(cfg: TrainConfig, args) -> dict:
    """Median per-step samples/s of a short `training_function` run (after `args.warmup` steps)."""
    start = time.perf_counter()
    training_function(cfg)
    with open(os.path.join(cfg.output_dir, "metrics.jsonl")) as f:
        rates = [r["train/samples_per_second"] for r in map(json.loads, f) if "train/samples_per_second" in r]
    rates = rates[args.warmup:]
    return {"samples_per_s": statistics.median(rates), "min": min(rates), "max": max(rates), "steps": len(rates),
            "wall_s": time.perf_counter() - start}


def data_samples_per_s(cfg: TrainConfig) -> float:
    """Samples/s of one DataLoader worker (decode, replay or crop, tokenise, collate) of train.py's own loader, no
    model step."""
    cfg = dataclasses.replace(cfg, num_workers=1)
    _, processor = load_model_and_processor(cfg.model, random_init=True)
    _, teacher_spec, teacher_tokenize = load_teachers(cfg, "cpu") if cfg.recipe == "online_distill" else (None,) * 3
    loader, _ = build_train_data(cfg, PartialState(), processor, cfg.global_batch_size, teacher_spec, teacher_tokenize)
    batches = iter(loader)
    next(batches)  # worker start-up
    start, n = time.perf_counter(), 0
    for batch in batches:
        n += len(batch["pixel_values"])
    return n / (time.perf_counter() - start)


def markdown(result: dict) -> str:
    a = result["args"]
    precision = "fp32" if a["mixed_precision"] == "no" else a["mixed_precision"]
    lines = [f"Student `{a['student']}`, batch {a['batch_size']}, {precision}, {a['num_workers']} "
             f"loader workers; online teachers: 2 x `{a['teacher']}`; {result['device']}.", "",
             "| recipe | training samples/s (median) | min-max | data pipeline samples/s per worker |",
             "|---|---|---|---|"]
    for recipe in a["recipes"]:
        t, d = result["train"][recipe], result["data_per_worker"][recipe]
        lines.append(f"| {recipe} | {t['samples_per_s']:.1f} | {t['min']:.1f}-{t['max']:.1f} | {d:.1f} |")
    return "\n".join(lines) + "\n"


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
    p.add_argument("--out", default="benchmarks/results/train_cpu.json")
    args = p.parse_args()
    if args.device == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"  # accelerate would take a visible GPU otherwise
    num_images = args.batch_size * (args.warmup + args.steps + 1)
    result = {"device": device_name(args.device), "torch": torch.__version__, "args": vars(args),
              "train": {}, "data_per_worker": {}}
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, "data")
        report = reinforced_dataset(data, num_images, args.k, args.n, num_workers=os.cpu_count() or 1)
        result["bytes_per_sample"] = report["storage"]["bytes_per_sample"]
        for recipe in args.recipes:
            cfg = run_config(recipe, data, args, work)
            result["data_per_worker"][recipe] = data_samples_per_s(cfg)
            result["train"][recipe] = train_samples_per_s(cfg, args)
            print(f"{recipe}: {result['train'][recipe]['samples_per_s']:.1f} samples/s training, "
                  f"{result['data_per_worker'][recipe]:.1f} samples/s per data worker", flush=True)
    write_results(result, markdown(result), args.out)


if __name__ == "__main__":
    main()
