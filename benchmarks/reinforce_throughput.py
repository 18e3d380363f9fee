"""Dataset reinforcement throughput, per stage and end to end, and storage per sample. Prints a table, writes JSON
and markdown. Run from the repository root:

    python -m benchmarks.reinforce_throughput                       # CPU: 2 images (two ViT-L/14 teachers are slow)
    python -m benchmarks.reinforce_throughput --device cuda --num-images 256 --captioner openclip:coca_ViT-L-14:

DataCompDR-12M's recipe by default: K=30 augmentations at 224 px, N=5 synthetic captions, two open_clip ViT-L-14
teachers (random weights: the cost is the same) in fp16 on a GPU, fp32 on CPU, on synthetic 400x300 JPEGs (about
DataComp's median image). Stages, each timed alone on the same samples:

* decode + augment: `prepare_sample` in one process (decode, sample K parameter sets, replay them at each teacher's
  resolution); the builder runs this in `--num-workers` DataLoader workers, so divide by the workers you have;
* captioner: N captions per image (CoCa generates a fixed 30 tokens, so random weights cost what real ones do);
* each teacher: its K replayed images and 1 + N captions per sample;
* write: Arrow conversion and the parquet write of the finished samples;
* end to end: `build_reinforced_dataset` with everything, `--num-workers` workers.
"""

import argparse
import os
import statistics
import tempfile
import time

import datasets
import pyarrow.parquet as pq
import torch

from benchmarks.common import device_name, synthetic_dataset, write_results
from dataset_builder import (
    PrepConfig,
    ReinforcementMetadata,
    TeacherEnsemble,
    TeacherInfo,
    build_reinforced_dataset,
    load_captioner,
    load_teacher,
    prepare_sample,
    records_to_table,
)


def timed(fn, repeats: int, sync) -> float:
    """Median seconds of `repeats` calls of `fn`, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def stage_timings(dataset, ensemble: TeacherEnsemble, captioner, args, sync) -> dict[str, dict]:
    """Seconds per sample of each stage, measured on the same `args.num_images` samples."""
    n = len(dataset)
    cfg = PrepConfig(image_column="image", caption_column="caption", key_column="key", views=ensemble.views,
                     num_augmentations=args.k, seed=0, keep_pil=True)
    encoded = dataset.cast_column("image", datasets.Image(decode=False))
    rows = [encoded[i] for i in range(n)]  # JPEG bytes
    samples = [prepare_sample(row, i, cfg) for i, row in enumerate(rows)]
    # Stand-ins for the captioner's output (timed on its own below).
    syn = [[f"{s.caption}, variant {j}" for j in range(args.n)] for s in samples]
    stages = {"decode + augment": timed(lambda: [prepare_sample(r, i, cfg) for i, r in enumerate(rows)], 1, sync)}
    if captioner is not None:
        images = [s.image for s in samples]
        stages["captioner"] = timed(lambda: captioner.caption(images, args.n, list(range(n))), 1, sync)
    texts = [t for s, c in zip(samples, syn) for t in [s.caption, *c]]
    for i, teacher in enumerate(ensemble.teachers):
        views = torch.cat([s.views[(teacher.image_size, teacher.interpolation)] for s in samples])
        name = f"teacher {i + 1}: {teacher.name}"
        stages[f"{name} images"] = timed(lambda: teacher.embed_images(views).cpu(), args.repeats, sync)
        stages[f"{name} texts"] = timed(lambda: teacher.embed_texts(texts).cpu(), args.repeats, sync)
    metadata = ReinforcementMetadata(args.k, args.n, tuple(TeacherInfo(**t) for t in ensemble.metadata()))
    records = [s.to_record(c, torch.randn(args.k, ensemble.dim).half().numpy(),
                           torch.randn(1 + args.n, ensemble.dim).half().numpy()) for s, c in zip(samples, syn)]
    with tempfile.TemporaryDirectory() as out:
        stages["write"] = timed(lambda: pq.write_table(records_to_table(records, metadata.features()),
                                                       os.path.join(out, "shard.parquet")), args.repeats, sync)
    return {name: {"s_per_sample": seconds / n, "samples_per_s": n / seconds} for name, seconds in stages.items()}


def markdown(result: dict) -> str:
    a = result["args"]
    lines = [f"{result['device']}; K={a['k']}, N={a['n']}, {a['num_images']} images of 400x300, teachers "
             f"{', '.join(a['teachers'])} ({result['dtype']}), captioner {a['captioner']}.", "",
             "| stage | samples/s | s per sample | images or texts/s |", "|---|---|---|---|"]
    for name, s in result["stages"].items():
        per = ""
        if name.endswith("images"):
            per = f"{s['samples_per_s'] * a['k']:.3g} images/s"
        elif name.endswith("texts"):
            per = f"{s['samples_per_s'] * (1 + a['n']):.3g} texts/s"
        elif name == "captioner":
            per = f"{s['samples_per_s'] * a['n']:.3g} captions/s"
        lines.append(f"| {name} | {s['samples_per_s']:.3g} | {s['s_per_sample']:.3g} | {per} |")
    e = result["end_to_end"]
    lines.append(f"| **end to end** ({a['num_workers']} workers) | **{e['samples_per_s']:.3g}** | "
                 f"{1 / e['samples_per_s']:.3g} | |")
    storage = result["storage"]
    lines += ["", f"Storage: {storage['bytes_per_sample'] / 1024:.1f} KiB per sample ("
              + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in storage["bytes_per_sample_per_column"].items()
                          if v >= 512) + ")."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--num-images", type=int, default=2)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--teachers", nargs="+", default=["openclip:ViT-L-14:", "openclip:ViT-L-14:"],
                   help="dataset_builder teacher specs (an empty pretrained tag: random weights)")
    p.add_argument("--captioner", default="openclip:coca_ViT-L-14:", help="a captioner spec, or none")
    p.add_argument("--batch-size", type=int, default=32, help="end to end: samples per teacher batch")
    p.add_argument("--num-workers", type=int, default=os.cpu_count() or 1, help="end to end: decoding workers")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/reinforce_cpu.json")
    args = p.parse_args()
    dtype = torch.float16 if args.device == "cuda" else torch.float32
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    teachers = [load_teacher(spec, args.device, dtype) for spec in args.teachers]
    captioner = load_captioner(args.captioner, args.device, dtype)
    args.n = args.n if captioner else 0  # without a captioner there are no synthetic captions
    ensemble = TeacherEnsemble(teachers)
    dataset = synthetic_dataset(args.num_images)
    result = {"device": device_name(args.device), "dtype": str(dtype).removeprefix("torch."),
              "torch": torch.__version__, "args": vars(args),
              "stages": stage_timings(dataset, ensemble, captioner, args, sync)}
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        report = build_reinforced_dataset(dataset, out, teachers, captioner, key_column="key", num_augmentations=args.k,
                                          num_synthetic_captions=args.n, num_shards=1,
                                          batch_size=args.batch_size, num_workers=args.num_workers, progress=False)
        sync()
        seconds = time.perf_counter() - start
    result["end_to_end"] = {"seconds": seconds, "samples_per_s": args.num_images / seconds}
    result["storage"] = report["storage"]
    write_results(result, markdown(result), args.out)


if __name__ == "__main__":
    main()
