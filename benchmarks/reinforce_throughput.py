"""Throughput of dataset reinforcement with DataCompDR-sized models (random weights): samples/s, writes JSON.

    python benchmarks/reinforce_throughput.py --num-images 256 --captioner coca --out reinforce.json

Teachers: two open_clip ViT-L-14 (fp16 on GPU); captioner: open_clip coca_ViT-L-14 or none; K=30, N=5 by default.
Images are synthetic 400x300 JPEGs (about DataComp's median size).
"""

import argparse
import io
import json
import tempfile
import time

import datasets
import numpy as np
import torch
from PIL import Image

from dataset_builder import CoCaCaptioner, OpenCLIPTeacher, build_reinforced_dataset


def synthetic_dataset(n: int) -> datasets.Dataset:
    rng = np.random.default_rng(0)
    images = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
        images.append({"bytes": buf.getvalue(), "path": None})
    return datasets.Dataset.from_dict({"image": images, "caption": [f"caption {i}" for i in range(n)]},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "caption": datasets.Value("string")}))


def timed_build(dataset, teachers, captioner, args, n_syn: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        build_reinforced_dataset(dataset, out, teachers, captioner, num_augmentations=args.k,
                                 num_synthetic_captions=n_syn, num_shards=1, batch_size=args.batch_size,
                                 num_workers=args.num_workers, progress=False)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--num-images", type=int, default=256)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=8)
    p.add_argument("--captioner", choices=["coca", "none"], default="none")
    p.add_argument("--out", default="reinforce_throughput.json")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    teachers = [OpenCLIPTeacher("ViT-L-14", None, device, dtype, logit_scale=100.0) for _ in range(2)]
    captioner = CoCaCaptioner("coca_ViT-L-14", None, device, dtype) if args.captioner == "coca" else None
    dataset = synthetic_dataset(args.num_images)
    n_syn = args.n if captioner else 0
    timed_build(dataset.select(range(args.batch_size)), teachers, captioner, args, n_syn)  # warm-up
    seconds = timed_build(dataset, teachers, captioner, args, n_syn)
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "args": vars(args),
              "seconds": seconds, "samples_per_s": args.num_images / seconds,
              "teacher_images_per_s": args.num_images * args.k * len(teachers) / seconds}
    print(json.dumps(result, indent=2))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
