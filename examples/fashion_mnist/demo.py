"""MobileCLIP's multi-modal reinforced training in miniature, on real images, offline, on a CPU.

The paper's setting, small: strong teachers trained on data the student never sees, a real captioner, a student
split with noisy web-like captions, the split reinforced once, and students trained with and without it.

* Data: Fashion-MNIST (MIT licence). The student's split is the 6,000 training images shipped in `data/` (with the
  1,000 test images every model is evaluated on); `--data` takes another folder of `train/test.parquet` or a Hub id.
* Web captions (`captions.web_captions`): the student's captions are a seeded mixture standing in for web alt-text:
  25% a correct caption ("a photo of a coat."), 25% a caption naming a wrong class, 50% uninformative alt-text
  ("IMG_2041.jpg", "new arrival, free shipping").
* Teachers and captioner (committed in `pretrained/`, trained by `pretrain.py` on the other 54,000 training images,
  with clean captions; their sha256 are checked before loading): two MobileCLIP dual encoders with MCi image towers
  (two seeds), and a small VisionEncoderDecoderModel captioner.

Stages (each announced with its size and a rough time; each cached in `--output`, so a rerun skips what is done):

1. the committed teachers and captioner, checked and loaded; their zero-shot accuracy on the clean test images;
2. reinforcement (`dataset_builder.build_reinforced_dataset`): K stored augmentations per image (random resized crop
   + RandAugment), N synthetic captions sampled from the captioner (per-row seeded top-p 0.9, from pixels only), and
   both teachers' embeddings of every augmentation and caption; the teachers' accuracy on the stored views;
3. students, same architecture, same initial weights and data order per seed, constant learning rate after warm-up
   and a moving average of the weights whose decay depends on the step alone (`EMA`; accuracy after s samples then
   means the same for every budget), `train/train.py`'s `training_function`:
   plain CLIP on the web captions (the baseline, `BASELINE_FACTOR` times the reinforced budget), the reinforced
   student (the paper's S-variant loss: distillation only, weights (0, 1)), and CLIP on web + generated captions
   with the stored augmentations but no teachers (the reinforced recipe with weights (1, 0): an ablation);
4. zero-shot accuracy (class names x 8 templates) and class-level retrieval on the test split, a table,
   `results.json`, `accuracy.png` (accuracy against samples seen, log x, teachers as horizontal lines), the
   learning efficiency (samples the baseline needs to reach the reinforced student's final accuracy, over the
   reinforced student's samples; a lower bound when the baseline never gets there), and the reinforced student
   reloaded with AutoModel and run through the zero-shot pipeline.

    python examples/fashion_mnist/demo.py [--output outputs/fashion_mnist] [--seeds 2] [--quick]
"""

import argparse
import hashlib
import json
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning threads burn the other's core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))  # on sys.path when run as a script: `captions`, `pretrain`
ROOT = os.path.dirname(os.path.dirname(HERE))

from modeling_mobileclip.atomic import write_json  # noqa: E402

from captions import CLASS_NAMES, TEMPLATES, WEB_MIXTURE, caption_class, web_captions  # noqa: E402

# The student shares the teachers' image size, text tower and augmentation family (crop scale, RandAugment magnitude).
from pretrain import CROP_SCALE, IMAGE_SIZE, MAGNITUDE, mobileclip_processor, model_config  # noqa: E402

PRETRAINED = os.path.join(HERE, "pretrained")
TEACHERS = ("teacher_mci_seed0", "teacher_mci_seed1")
CAPTIONER = "captioner"
# The student: a ViT smaller than both teachers (4x4-px patches, width 48, 2 blocks) with their small text tower.
STUDENT = dict(architecture="vit_tiny_patch16_224",
               model_args={"patch_size": 4, "embed_dim": 48, "depth": 2, "num_heads": 2})
BATCH_SIZE = 128
BASELINE_FACTOR = 6  # the CLIP baseline trains this many times the reinforced student's samples
# One constant learning rate after warm-up for every student, so that accuracy after s samples means the same for
# every budget; chosen for the baseline, the recipe it matters most to: at 1e-3 the CLIP student levels off near 56%
# (57.7% / 54.4% at the end), at 5e-4 and 2.5e-4 it ends at 62.8-66.1%, while the reinforced student ends within
# noise of the same at 1e-3 and 5e-4 (and lower at 2e-3). A higher rate would flatter the reinforced student.
LEARNING_RATE = 5e-4
# Every student is evaluated and saved as the moving average of its weights (train.py's ema_decay), with a decay that
# ramps with the step alone (1 - t^-0.75 after step t), so that accuracy after s samples still means the same for every
# budget. The raw weights' zero-shot accuracy swings by several points between neighbouring evaluations; the
# average's rises smoothly.
EMA = dict(ema_decay=0.998, ema_warmup_power=0.75)
CHANCE = 1 / len(CLASS_NAMES)
# Rough CPU costs measured on 2 idle cores, for the stage announcements only.
SECONDS_PER_1K_STUDENT_SAMPLES = 1.0
SECONDS_PER_1K_REINFORCED_VIEWS = 1.0


def announce(stage: str, what: str, seconds: float) -> float:
    print(f"\n== {stage}: {what} (roughly {seconds / 60:.1f} min on 2 idle CPU cores)", flush=True)
    return time.time()


def verify_checksums(folder: str = PRETRAINED) -> dict[str, str]:
    """Checks every file listed in `folder/SHA256SUMS` against its sha256; returns {relative path: sha256}."""
    sums = os.path.join(folder, "SHA256SUMS")
    if not os.path.isfile(sums):
        raise FileNotFoundError(f"{sums} is missing: restore it (git checkout) or rerun pretrain.py")
    expected = {}
    with open(sums) as f:
        for line in f:
            digest, path = line.rstrip("\n").split("  ", 1)
            expected[path] = digest
    for path, digest in expected.items():
        full = os.path.join(folder, path)
        if not os.path.isfile(full):
            raise FileNotFoundError(f"{full} is listed in {sums} but missing: git checkout it or rerun pretrain.py")
        with open(full, "rb") as f:
            actual = hashlib.sha256(f.read()).hexdigest()
        if actual != digest:
            raise ValueError(f"{full} has sha256 {actual}, {sums} records {digest}: the committed model was changed "
                             "(git checkout it, or rerun pretrain.py, which rewrites SHA256SUMS)")
    return expected


def load_split(data: str, split: str):
    """`split` of a folder of `{split}.parquet` files or of a Hub dataset with `image` and `label` columns."""
    if os.path.isdir(data):
        return load_dataset("parquet", data_files=os.path.join(data, f"{split}.parquet"), split="train")
    return load_dataset(data, split=split)


def captioned_splits(output: str, data: str, seed: int = 0) -> str:
    """The student's split with web-like captions (`captions.web_captions`, kind in `caption_kind`), and the test
    split with one clean caption per image (for retrieval); writes train/test parquet."""
    folder = os.path.join(output, "captioned")
    if os.path.exists(os.path.join(folder, "test.parquet")):
        return folder
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(seed)
    train = load_split(data, "train")
    captions, kinds = web_captions(train["label"], seed)
    train = train.add_column("key", [f"train-{i:05d}" for i in range(len(train))])
    train.add_column("caption", captions).add_column("caption_kind", kinds).to_parquet(
        os.path.join(folder, "train.parquet"))
    test = load_split(data, "test")
    test = test.add_column("key", [f"test-{i:05d}" for i in range(len(test))])
    test.add_column("caption", [rng.choice(TEMPLATES).format(CLASS_NAMES[label]) for label in test["label"]]
                    ).to_parquet(os.path.join(folder, "test.parquet"))
    return folder


def load_teachers(pretrained: str) -> list:
    from dataset_builder import TransformersTeacher

    class MemoizedTextTeacher(TransformersTeacher):
        """Embeds each distinct caption once: web and generated captions repeat a lot here."""

        def _encode_text(self, texts: list[str]) -> torch.Tensor:
            cache = self.__dict__.setdefault("_cache", {})
            missing = sorted({t for t in texts if t not in cache})
            if missing:
                cache.update(zip(missing, super()._encode_text(missing)))
            return torch.stack([cache[t] for t in texts])

    return [MemoizedTextTeacher.from_pretrained(os.path.join(pretrained, name), interpolation="bilinear")
            for name in TEACHERS]


def reinforce(captioned: str, output: str, pretrained: str, num_augmentations: int, num_captions: int,
              max_images: int | None = None) -> str:
    from dataset_builder import TransformersCaptioner, build_reinforced_dataset

    out = os.path.join(output, "reinforced")
    if os.path.exists(os.path.join(out, "reinforcement.json")):
        print(f"[reinforce] cached in {out}")
        return out
    train = load_dataset("parquet", data_files=os.path.join(captioned, "train.parquet"), split="train")
    train = train.select(range(min(len(train), max_images or len(train))))
    captioner = TransformersCaptioner.from_pretrained(os.path.join(pretrained, CAPTIONER))
    captioner.name = f"hf:{os.path.relpath(os.path.join(pretrained, CAPTIONER), ROOT)}"  # not this machine's path
    report = build_reinforced_dataset(
        train.remove_columns(["label", "caption_kind"]), out, teachers=load_teachers(pretrained), captioner=captioner,
        key_column="key", num_augmentations=num_augmentations, num_synthetic_captions=num_captions,
        aug_resolution=IMAGE_SIZE, crop_scale=CROP_SCALE, rand_augment_magnitude=MAGNITUDE,
        samples_per_shard=3000, batch_size=100, progress=False,
    )
    print(f"[reinforce] {report['rows_out'] if 'rows_out' in report else report}")
    return out


@torch.no_grad()
def class_embeddings(model, tokenizer) -> torch.Tensor:
    from train.evaluate import zero_shot_classifier

    return zero_shot_classifier(model, tokenizer, CLASS_NAMES, TEMPLATES)


@torch.no_grad()
def evaluate(model_dir: str, captioned: str) -> dict:
    """Zero-shot top-1/top-5 and class-level retrieval recall@1/5/10 both ways on the test split."""
    from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor
    from train.evaluate import class_retrieval_metrics, embed_images, embed_texts, image_dataloader, zero_shot_metrics

    model = MobileCLIPModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    processor = MobileCLIPProcessor.from_pretrained(model_dir)
    test = load_dataset("parquet", data_files=os.path.join(captioned, "test.parquet"), split="train")
    images = embed_images(model, image_dataloader(test, processor.image_processor, batch_size=500))
    labels = torch.tensor(test["label"])
    classifier = class_embeddings(model, processor.tokenizer)
    metrics = {f"zeroshot_{k}": v for k, v in zero_shot_metrics(images["features"], labels, classifier).items()}
    texts = embed_texts(model, processor.tokenizer, test["caption"])
    # The captions are class-level: any item of the query's class is a hit.
    for direction, (queries, candidates) in (("image_to_text", (images["features"], texts)),
                                             ("text_to_image", (texts, images["features"]))):
        recalls = class_retrieval_metrics(queries, candidates, labels, labels)
        metrics.update({f"{direction}_{k}": v for k, v in recalls.items()})
    return metrics


@torch.no_grad()
def reinforced_view_accuracy(reinforced: str, captioned: str, pretrained: str) -> dict[str, float]:
    """Each teacher's zero-shot top-1 on the K stored views of the student's images (their stored embeddings)."""
    import numpy as np

    from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor

    rows = load_dataset("parquet", data_dir=os.path.join(reinforced, "data"), split="train").with_format("numpy")
    labels = load_dataset("parquet", data_files=os.path.join(captioned, "train.parquet"), split="train")["label"]
    labels = torch.tensor(labels[:len(rows)])
    embeddings = torch.from_numpy(np.stack(rows["image_emb"])).float()  # (n, K, D)
    with open(os.path.join(reinforced, "reinforcement.json")) as f:
        dims = [t["dim"] for t in json.load(f)["teachers"]]
    result, offset = {}, 0
    for name, dim in zip(TEACHERS, dims):
        path = os.path.join(pretrained, name)
        model = MobileCLIPModel.from_pretrained(path, dtype=torch.float32).eval()
        classifier = class_embeddings(model, MobileCLIPProcessor.from_pretrained(path).tokenizer)
        predicted = (embeddings[..., offset:offset + dim] @ classifier.T).argmax(-1)
        result[name] = (predicted == labels[:, None]).float().mean().item()
        offset += dim
    return result


def synthetic_caption_stats(reinforced: str, captioned: str) -> dict:
    """How often the captioner's captions name the image's true class, a wrong class, or no class."""
    rows = load_dataset("parquet", data_dir=os.path.join(reinforced, "data"), split="train")
    train = load_dataset("parquet", data_files=os.path.join(captioned, "train.parquet"), split="train")
    counts = {"true_class": 0, "wrong_class": 0, "no_class": 0}
    for captions, label in zip(rows["syn_captions"], train["label"]):
        for caption in captions:
            named = caption_class(caption)
            counts["no_class" if named is None else "true_class" if named == label else "wrong_class"] += 1
    total = sum(counts.values())
    return {"fractions": {k: v / total for k, v in counts.items()}, "examples": rows["syn_captions"][:3]}


def student_init(output: str) -> str:
    """A config-only model folder (and processor): `training_function` initialises it from its seed."""
    path = os.path.join(output, "init", "student")
    if not os.path.exists(os.path.join(path, "config.json")):
        model_config(dict(image_size=IMAGE_SIZE, **STUDENT)).save_pretrained(path)
        mobileclip_processor(IMAGE_SIZE).save_pretrained(path)
    return path


def run_training(name: str, output: str, overrides: dict) -> str:
    """`train.train.training_function` unless the run's final model is already there; returns its folder."""
    import shutil

    from train.train import TrainConfig, training_function

    out = os.path.join(output, name)
    if os.path.exists(os.path.join(out, "model.safetensors")):
        print(f"[{name}] cached in {out}")
        return out
    shutil.rmtree(out, ignore_errors=True)  # an interrupted run: its metrics.jsonl would be appended to
    config = TrainConfig(num_workers=0, mixed_precision="no", report_to=["none"], save_every=0, log_every=25,
                         eval_batch_size=500, output_dir=out, run_name=name, weight_decay=0.1,
                         interpolation="bilinear", lr_scheduler="constant", **EMA, **overrides)
    start = time.time()
    training_function(config)
    print(f"[{name}] trained in {time.time() - start:.0f} s", flush=True)
    return out


def train_students(seed: int, plan: dict, init: str, output: str, zeroshot_eval: dict, threads: int) -> dict:
    """The students of one seed, in turn: same initial weights and data order (both set by the seed)."""
    torch.set_num_threads(threads)
    paths = {}
    for name, (recipe, data, steps, weights) in plan.items():
        extra = {"loss_weights": weights} if weights else {}
        paths[name] = run_training(f"{name}_seed{seed}", output, dict(
            model=init, recipe=recipe, train_dataset=data, global_batch_size=BATCH_SIZE, train_steps=steps,
            warmup_steps=min(20, steps), lr=LEARNING_RATE, seed=seed, **zeroshot_eval, **extra))
    return paths


def accuracy_curve(run_dir: str, batch_size: int) -> list[tuple[int, float]]:
    """(samples seen, zero-shot top-1) from the run's metrics.jsonl."""
    curve = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if "eval/zeroshot/top1" in record:
                curve.append((record["step"] * batch_size, record["eval/zeroshot/top1"]))
    return curve


def samples_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """Samples at which `curve` first reaches `target`, interpolated linearly between evaluations (from 0 samples
    at chance level before the first one); None if it never does."""
    previous = (0, CHANCE)
    for samples, accuracy in curve:
        if accuracy >= target:
            (s0, a0) = previous
            if a0 >= target:  # already there at the previous point (a curve starting above target)
                return float(s0)
            return s0 + (samples - s0) * (target - a0) / (accuracy - a0)
        previous = (samples, accuracy)
    return None


def learning_efficiency(reinforced: list, baseline: list) -> dict:
    """Samples the baseline needs to reach the reinforced student's final accuracy, over the reinforced student's
    samples (the paper's learning efficiency). When the baseline never gets there within its budget, `ratio` is the
    lower bound baseline samples / reinforced samples and `lower_bound` is True. Also the converse view: samples the
    reinforced student needs to reach the baseline's final accuracy."""
    (reinforced_samples, reinforced_final), (baseline_samples, baseline_final) = reinforced[-1], baseline[-1]
    needed = samples_to_reach(baseline, reinforced_final)
    reinforced_needs = samples_to_reach(reinforced, baseline_final)
    return {
        "reinforced_final_top1": reinforced_final, "reinforced_samples": reinforced_samples,
        "baseline_final_top1": baseline_final, "baseline_samples": baseline_samples,
        "baseline_samples_to_reach_reinforced_final": needed,
        "ratio": (needed if needed is not None else baseline_samples) / reinforced_samples,
        "lower_bound": needed is None,
        "reinforced_samples_to_reach_baseline_final": reinforced_needs,
    }


def summarize_efficiency(per_seed: dict[str, dict]) -> dict:
    """Mean and range of the per-seed ratios; a lower bound if any seed's is."""
    ratios = [e["ratio"] for e in per_seed.values()]
    return {"per_seed": per_seed, "mean": sum(ratios) / len(ratios), "min": min(ratios), "max": max(ratios),
            "lower_bound": any(e["lower_bound"] for e in per_seed.values())}


def plot(curves: dict, teachers: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {"student_reinforced": "tab:red", "student_clip": "tab:blue", "student_clip_syn": "tab:green"}
    for name, per_seed in curves.items():
        for i, (seed, curve) in enumerate(per_seed.items()):
            ax.plot([s for s, _ in curve], [100 * a for _, a in curve], marker="o", ms=3, color=colors.get(name),
                    linestyle="-" if i == 0 else "--", label=f"{name} (seed {seed})")
    for (name, accuracy), style in zip(teachers.items(), (":", "-.")):
        ax.axhline(100 * accuracy, color="gray", linestyle=style, label=f"{name} ({100 * accuracy:.1f}%)")
    ax.set_xscale("log")
    ax.set(xlabel="training samples seen (log scale)", ylabel="zero-shot top-1 on the test split (%)",
           title="Fashion-MNIST: reinforced vs CLIP students")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def mean_and_range(values: list[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ({100 * min(values):.1f}-{100 * max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.path.join("outputs", "fashion_mnist"))
    parser.add_argument("--data", default=os.path.join(HERE, "data"),
                        help="folder of train/test.parquet, or a Hub dataset id with image and label columns")
    parser.add_argument("--pretrained", default=PRETRAINED, help="folder of the teachers, captioner and SHA256SUMS")
    parser.add_argument("--student-steps", type=int, default=360, help="the reinforced student's steps")
    parser.add_argument("--num-augmentations", type=int, default=4)
    parser.add_argument("--num-captions", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--eval-images", type=int, default=None,
                        help="test images of the evaluations during training (default: all; the final ones use all)")
    parser.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    parser.add_argument("--quick", action="store_true", help="a smoke run of every stage: a few steps each (tests)")
    args = parser.parse_args()
    max_images = None
    if args.quick:
        args.student_steps, args.num_augmentations, args.num_captions, args.seeds, max_images = 4, 2, 2, 1, 512
        args.eval_images = args.eval_images or 200
    torch.set_num_threads(args.threads)
    os.makedirs(args.output, exist_ok=True)
    start, timings, results = time.time(), {}, {}

    t = announce("Stage 1/4, teachers and captioner", f"check the sha256 of the committed models in {args.pretrained}, "
                 "load them, evaluate the teachers on the clean test images", 15)
    verify_checksums(args.pretrained)
    captioned = captioned_splits(args.output, args.data)
    train = load_dataset("parquet", data_files=os.path.join(captioned, "train.parquet"), split="train")
    kinds = train["caption_kind"]
    results["web_captions"] = {"mixture": WEB_MIXTURE,
                               "measured": {k: kinds.count(k) / len(kinds) for k in WEB_MIXTURE},
                               "examples": train["caption"][:6]}
    print("web captions of the student's split (standing in for web alt-text noise): "
          + ", ".join(f"{100 * v:.0f}% {k}" for k, v in results["web_captions"]["measured"].items())
          + f"; e.g. {results['web_captions']['examples']}")
    results["teachers"] = {name: evaluate(os.path.join(args.pretrained, name), captioned) for name in TEACHERS}
    for name, metrics in results["teachers"].items():
        print(f"[{name}] zero-shot top-1 on the clean test images: {100 * metrics['zeroshot_top1']:.1f}%")
    timings["teachers"] = time.time() - t

    n_images = min(len(train), max_images or len(train))
    views = n_images * args.num_augmentations
    t = announce("Stage 2/4, reinforcement", f"{n_images} images x K={args.num_augmentations} stored augmentations "
                 f"through 2 teachers, N={args.num_captions} captions per image sampled from the captioner",
                 views * SECONDS_PER_1K_REINFORCED_VIEWS / 1000 + n_images * args.num_captions / 500)
    reinforced = reinforce(captioned, args.output, args.pretrained, args.num_augmentations, args.num_captions,
                           max_images)
    results["synthetic_captions"] = synthetic_caption_stats(reinforced, captioned)
    fractions = results["synthetic_captions"]["fractions"]
    print(f"synthetic captions (from pixels): {100 * fractions['true_class']:.1f}% name the true class, "
          f"{100 * fractions['wrong_class']:.1f}% a wrong one, {100 * fractions['no_class']:.1f}% none; e.g. "
          f"{results['synthetic_captions']['examples'][0]}")
    for name, accuracy in reinforced_view_accuracy(reinforced, captioned, args.pretrained).items():
        results["teachers"][name]["reinforced_views_top1"] = accuracy
        print(f"[{name}] zero-shot top-1 on the stored augmentations of the student's images: {100 * accuracy:.1f}%")
    timings["reinforcement"] = time.time() - t

    steps = args.student_steps
    eval_every = max(1, steps // 6)
    plan = {  # name: (recipe, dataset, steps, loss weights)
        "student_clip": ("clip", captioned, BASELINE_FACTOR * steps, None),
        "student_reinforced": ("reinforced", reinforced, steps, [0.0, 1.0]),
        "student_clip_syn": ("reinforced", reinforced, steps, [1.0, 0.0]),
    }
    workers = min(args.seeds, args.threads)  # one process per seed at a time (below)
    total_samples = args.seeds * sum(p[2] for p in plan.values()) * BATCH_SIZE
    t = announce("Stage 3/4, students", f"{args.seeds} seed(s) x (CLIP baseline {BASELINE_FACTOR * steps} steps, "
                 f"reinforced {steps} steps, CLIP on web + generated captions {steps} steps) x {BATCH_SIZE} samples, "
                 f"evaluated every {eval_every} steps", total_samples / workers * SECONDS_PER_1K_STUDENT_SAMPLES / 1000)
    init = student_init(args.output)
    zeroshot_eval = dict(eval_zeroshot_dataset=captioned, eval_zeroshot_split="test", eval_templates=TEMPLATES,
                         eval_class_names=CLASS_NAMES, eval_every=eval_every, eval_max_samples=args.eval_images)
    runs = {name: {} for name in plan}
    # One process per seed, one thread each: these small models use a second core better this way than through
    # intra-op threads.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        jobs = {seed: pool.submit(train_students, seed, plan, init, args.output, zeroshot_eval,
                                  max(1, args.threads // workers)) for seed in range(args.seeds)}
        for seed, job in jobs.items():
            for name, path in job.result().items():
                runs[name][str(seed)] = path
    timings["students"] = time.time() - t

    t = announce("Stage 4/4, evaluation", "zero-shot and retrieval on the 1,000 test images, table, plot, "
                 "learning efficiency, AutoModel + pipeline", 20)
    results["students"] = {name: {seed: evaluate(path, captioned) for seed, path in per_seed.items()}
                           for name, per_seed in runs.items()}
    curves = {name: {seed: accuracy_curve(path, BATCH_SIZE) for seed, path in per_seed.items()}
              for name, per_seed in runs.items()}
    results["curves"] = curves
    per_seed = {seed: learning_efficiency(curves["student_reinforced"][seed], curves["student_clip"][seed])
                for seed in curves["student_reinforced"]}
    results["learning_efficiency"] = summarize_efficiency(per_seed)
    plot(curves, {name: m["zeroshot_top1"] for name, m in results["teachers"].items()},
         os.path.join(args.output, "accuracy.png"))

    columns = ["zeroshot_top1", "zeroshot_top5", "image_to_text_R@1", "text_to_image_R@1", "text_to_image_R@5"]
    print(f"\n| model (test split, %; students: mean over {args.seeds} seed(s), range) | "
          + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for name, metrics in results["teachers"].items():
        print(f"| {name} | " + " | ".join(f"{100 * metrics[c]:.1f}" for c in columns) + " |")
    for name, per_seed_metrics in results["students"].items():
        samples = plan[name][2] * BATCH_SIZE
        print(f"| {name} ({samples} samples) | " + " | ".join(
            mean_and_range([m[c] for m in per_seed_metrics.values()]) for c in columns) + " |")

    efficiency = results["learning_efficiency"]
    finals = [e["reinforced_final_top1"] for e in per_seed.values()]
    if min(finals) < 2 * CHANCE:  # a smoke run, or a failed one: there is no efficiency to speak of
        print(f"\nlearning efficiency: not measured (the reinforced student is at {100 * min(finals):.1f}% zero-shot, "
              f"chance is {100 * CHANCE:.0f}%)")
        efficiency["claim"] = None
    else:
        lines = []
        for seed, e in per_seed.items():
            reach = (f"needs {e['baseline_samples_to_reach_reinforced_final']:.0f} samples to reach it"
                     if not e["lower_bound"] else f"does not reach it within its {e['baseline_samples']} samples")
            lines.append(f"  seed {seed}: the reinforced student ends at {100 * e['reinforced_final_top1']:.1f}% after "
                         f"{e['reinforced_samples']} samples; the CLIP baseline {reach} (it ends at "
                         f"{100 * e['baseline_final_top1']:.1f}%): {'>= ' if e['lower_bound'] else ''}"
                         f"{e['ratio']:.2f}x")
        bound = ">= " if efficiency["lower_bound"] else ""
        efficiency["claim"] = (f"learning efficiency {bound}{efficiency['mean']:.1f}x (seeds: "
                               f"{efficiency['min']:.1f}-{efficiency['max']:.1f}x)"
                               + (", a lower bound: the baseline's budget ran out first" if bound else ""))
        print("\nlearning efficiency (samples the CLIP baseline needs to reach the reinforced student's final "
              "zero-shot top-1, over the reinforced student's samples):\n" + "\n".join(lines)
              + f"\n{efficiency['claim']}")

    from transformers import AutoModel, pipeline

    from modeling_mobileclip import MobileCLIPImageProcessor, MobileCLIPTokenizer

    path = runs["student_reinforced"]["0"]
    test = load_dataset("parquet", data_files=os.path.join(captioned, "test.parquet"), split="train")
    classifier = pipeline("zero-shot-image-classification", model=AutoModel.from_pretrained(path),
                          tokenizer=MobileCLIPTokenizer.from_pretrained(path),
                          image_processor=MobileCLIPImageProcessor.from_pretrained(path))
    prediction = classifier(test[0]["image"].convert("RGB"), candidate_labels=CLASS_NAMES)[0]
    print(f"pipeline (AutoModel, reinforced student) on test image 0 (a {CLASS_NAMES[test[0]['label']]}): "
          f"{prediction['label']} ({prediction['score']:.2f})")
    timings["evaluation"] = time.time() - t
    timings["total"] = time.time() - start
    results["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    results["settings"] = {"student_steps": steps, "baseline_steps": BASELINE_FACTOR * steps,
                           "batch_size": BATCH_SIZE, "num_augmentations": args.num_augmentations,
                           "num_captions": args.num_captions, "seeds": args.seeds, "threads": args.threads,
                           "crop_scale": list(CROP_SCALE), "rand_augment_magnitude": MAGNITUDE,
                           "learning_rate": LEARNING_RATE, **EMA, "images": n_images}
    write_json(os.path.join(args.output, "results.json"), results)
    print(f"timings (s): {results['timings_s']}")
    print(f"results: {args.output}/results.json, {args.output}/accuracy.png ({timings['total']:.0f} s in all)")


if __name__ == "__main__":
    main()
