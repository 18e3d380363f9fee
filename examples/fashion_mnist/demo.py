"""The whole multi-modal reinforced training loop on real images, offline, on a CPU.

Data: the Fashion-MNIST subset shipped in `data/` (6,000 training and 1,000 test images, 10 classes; MIT licence;
`--data` takes the full set written by `prepare.py --full` or a Hub id), captioned from class names and templates;
hand-written class descriptions stand in for a captioner's synthetic captions. Steps, each cached in `--output` so
that a rerun skips what is done:

1. two teachers (MobileCLIP-style dual encoders with MCi image towers, wider and deeper than the student's, trained
   for more steps) trained here with plain CLIP on the training split (`train/train.py`, recipe `clip`);
2. the training split reinforced with both teachers (`dataset_builder`: K stored augmentations per image, teacher
   embeddings of every augmentation and caption);
3. a small MobileCLIP student trained on it with the reinforced loss, and the same student trained with plain CLIP
   for the same number of samples (`train/train.py`, recipes `reinforced` and `clip`), evaluated periodically;
4. zero-shot accuracy (class names x templates) and retrieval (a retrieved item is relevant when it shows the
   query's class: the captions are class-level) on the test split; a table, `results.json` and `accuracy.png`
   (accuracy against samples seen); the learning-efficiency ratio; the student reloaded with AutoModel and used
   through the zero-shot pipeline.

    python examples/fashion_mnist/demo.py [--output outputs/fashion_mnist] [--data DIR_OR_HUB_ID] [--quick]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time

import torch
import yaml
from datasets import load_dataset

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)  # train/ and dataset_builder/ when run from a checkout

from dataset_builder import TransformersTeacher, build_reinforced_dataset  # noqa: E402
from modeling_mobileclip import (  # noqa: E402
    MobileCLIPConfig,
    MobileCLIPImageProcessor,
    MobileCLIPModel,
    MobileCLIPProcessor,
    MobileCLIPTextConfig,
    MobileCLIPTokenizer,
    MobileCLIPVisionConfig,
)
from train.evaluate import (  # noqa: E402
    embed_images,
    embed_texts,
    image_dataloader,
    zero_shot_classifier,
    zero_shot_metrics,
)

CLASS_NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"]
TEMPLATES = ["a photo of a {}.", "a black and white photo of a {}.", "a low resolution photo of a {}.",
             "a photo of the {}.", "a picture of a {}.", "an image of a {}.", "a grayscale photo of a {}.",
             "a small photo of a {}."]
# Stand-ins for a captioner's synthetic captions: several descriptions per class, richer than the templates.
DESCRIPTIONS = {
    "t-shirt": ["a short-sleeved cotton top", "a casual tee with a round neck", "a simple top without buttons",
                "a plain t-shirt laid flat"],
    "trouser": ["a pair of long pants", "two straight trouser legs", "a pair of slim jeans",
                "long trousers seen from the front"],
    "pullover": ["a long-sleeved knitted sweater", "a warm jumper with long sleeves", "a wool pullover",
                 "a cosy sweater laid flat"],
    "dress": ["a one-piece dress", "a long dress for women", "a summer dress without sleeves",
              "a dress with a flared skirt"],
    "coat": ["a warm winter coat", "a jacket with long sleeves and buttons", "a coat with a zip",
             "an outdoor jacket"],
    "sandal": ["an open summer shoe with straps", "a strappy sandal", "a flat sandal seen from the side",
               "open-toed footwear"],
    "shirt": ["a shirt with a collar and buttons", "a button-down shirt", "a long-sleeved blouse",
              "a formal shirt laid flat"],
    "sneaker": ["a low sports shoe", "a running shoe seen from the side", "a canvas trainer",
                "a casual sneaker"],
    "bag": ["a handbag", "a leather bag with handles", "a shoulder bag", "a tote bag"],
    "ankle boot": ["a boot that reaches the ankle", "a short leather boot", "a heeled ankle boot",
                   "a winter boot seen from the side"],
}
NUM_SYNTHETIC = 4
IMAGE_SIZE = 32  # 28-px images, resized so that the stride-32 MCi towers keep a 1x1 final map
# The longest caption here is 13 tokens: a 32-token context (MobileCLIP's is 77) halves the text towers' cost.
CONTEXT_LENGTH = 32
# DataCompDR's crops keep 8-100% of a 400-px photo; of a 28-px image they would keep as little as 8x8 pixels.
CROP_SCALE = (0.9, 1.0)

# Teachers: two MCi dual encoders, wider and deeper than the student, trained longer; 128-d joint spaces.
TEACHERS = {
    "teacher_mci_wide": dict(architecture="fastvit_mci0",
                             model_args={"layers": [1, 1, 3, 1], "embed_dims": [32, 64, 128, 256]}),
    "teacher_mci_deep": dict(architecture="fastvit_mci0",
                             model_args={"layers": [2, 2, 4, 2], "embed_dims": [24, 48, 96, 192]}),
}
TEACHER_TEXT = dict(text_width=96, text_layers=3)
STUDENT = dict(architecture="fastvit_mci0", model_args={"layers": [1, 1, 2, 1], "embed_dims": [16, 32, 64, 128]})


def model_config(vision: dict, text_width: int, text_layers: int) -> MobileCLIPConfig:
    text = MobileCLIPTextConfig(hidden_size=text_width, intermediate_size=4 * text_width,
                                num_hidden_layers=text_layers, num_attention_heads=max(1, text_width // 32),
                                projection_dim=128, max_position_embeddings=CONTEXT_LENGTH)
    return MobileCLIPConfig(text_config=text, projection_dim=128,
                            vision_config=MobileCLIPVisionConfig(image_size=IMAGE_SIZE, projection_dim=128, **vision))


def init_model_folder(path: str, config: MobileCLIPConfig, seed: int) -> str:
    """A randomly initialised model and its processor, saved: the starting point `train.py` loads."""
    if not os.path.exists(os.path.join(path, "config.json")):
        torch.manual_seed(seed)
        MobileCLIPModel(config).save_pretrained(path)
        image_processor = MobileCLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                                   crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
        tokenizer = MobileCLIPTokenizer(model_max_length=CONTEXT_LENGTH)
        MobileCLIPProcessor(image_processor, tokenizer).save_pretrained(path)
    return path


def load_split(data: str, split: str):
    """`split` of a folder of `{split}.parquet` files (the shipped subset; `prepare.py --full` writes the whole set)
    or of a Hub dataset with the same `image` and `label` columns (e.g. `zalando-datasets/fashion_mnist`)."""
    if os.path.isdir(data):
        return load_dataset("parquet", data_files=os.path.join(data, f"{split}.parquet"), split="train")
    return load_dataset(data, split=split)


def captioned_splits(output: str, data: str, seed: int = 0) -> str:
    """Adds a real caption (a random template) and the synthetic captions to each image; writes train/test parquet."""
    folder = os.path.join(output, "captioned")
    if os.path.exists(os.path.join(folder, "test.parquet")):
        return folder
    os.makedirs(folder, exist_ok=True)
    rng = random.Random(seed)
    for split in ("train", "test"):
        rows = load_split(data, split)
        names = [CLASS_NAMES[label] for label in rows["label"]]
        rows = rows.add_column("key", [f"{split}-{i:05d}" for i in range(len(rows))])
        rows = rows.add_column("caption", [rng.choice(TEMPLATES).format(name) for name in names])
        syn = [[f"a photo of {d}." for d in rng.sample(DESCRIPTIONS[name], NUM_SYNTHETIC)] for name in names]
        rows.add_column("syn_captions", syn).to_parquet(os.path.join(folder, f"{split}.parquet"))
    return folder


def run_training(name: str, output: str, overrides: dict) -> str:
    """Runs `train/train.py` (as users do) unless its final model is already there; returns the output folder."""
    out = os.path.join(output, name)
    if os.path.exists(os.path.join(out, "model.safetensors")):
        print(f"[{name}] cached in {out}")
        return out
    config = dict(num_workers=0, mixed_precision="no", report_to=["none"], save_every=0, log_every=10,
                  eval_batch_size=500, output_dir=out, run_name=name, warmup_steps=20, weight_decay=0.1,
                  **overrides)
    path = os.path.join(output, f"{name}.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(config, f)
    start = time.time()
    subprocess.run([sys.executable, os.path.join(ROOT, "train", "train.py"), "--config", path], check=True)
    print(f"[{name}] trained in {time.time() - start:.0f} s")
    return out


class MemoizedTextTeacher(TransformersTeacher):
    """Caches text embeddings by caption: these captions come from a few templates and descriptions, so each
    distinct caption is embedded once instead of once per image."""

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        cache = self.__dict__.setdefault("_cache", {})
        missing = sorted({t for t in texts if t not in cache})
        if missing:
            cache.update(zip(missing, super()._encode_text(missing)))
        return torch.stack([cache[t] for t in texts])


def reinforce(captioned: str, teachers: list[str], output: str, num_augmentations: int,
              max_images: int | None = None) -> str:
    out = os.path.join(output, "reinforced")
    if os.path.exists(os.path.join(out, "reinforcement.json")):
        return out
    train = load_dataset("parquet", data_files=os.path.join(captioned, "train.parquet"), split="train")
    train = train.select(range(min(len(train), max_images or len(train))))
    ensemble = [MemoizedTextTeacher.from_pretrained(path, interpolation="bilinear") for path in teachers]
    start = time.time()
    report = build_reinforced_dataset(
        train.remove_columns("label"), out, teachers=ensemble, captioner=None, key_column="key",
        syn_captions_column="syn_captions", num_augmentations=num_augmentations,
        num_synthetic_captions=NUM_SYNTHETIC, aug_resolution=IMAGE_SIZE, crop_scale=CROP_SCALE, samples_per_shard=1500,
        batch_size=100,
    )
    print(f"[reinforce] {len(train)} images x {num_augmentations} augmentations in {time.time() - start:.0f} s: "
          f"{report}")
    return out


@torch.no_grad()
def evaluate(model_dir: str, captioned: str) -> dict:
    """Zero-shot top-1/top-5 and class-level retrieval recall@1/5/10 both ways on the test split."""
    model = MobileCLIPModel.from_pretrained(model_dir).eval()
    processor = MobileCLIPProcessor.from_pretrained(model_dir)
    test = load_dataset("parquet", data_files=os.path.join(captioned, "test.parquet"), split="train")
    loader = image_dataloader(test, processor.image_processor, batch_size=500)
    images = embed_images(model, loader)
    labels = torch.tensor(test["label"])
    classifier = zero_shot_classifier(model, processor.tokenizer, CLASS_NAMES, TEMPLATES)
    metrics = {f"zeroshot_{k}": v for k, v in zero_shot_metrics(images["features"], labels, classifier).items()}
    texts = embed_texts(model, processor.tokenizer, test["caption"])
    similarity = images["features"] @ texts.T
    for direction, sim in (("image_to_text", similarity), ("text_to_image", similarity.T)):
        top = sim.topk(10, dim=1).indices
        relevant = labels[top] == labels[:, None]  # the captions are class-level: any item of the class is a hit
        metrics.update({f"{direction}_R@{k}": relevant[:, :k].any(1).float().mean().item() for k in (1, 5, 10)})
    return metrics


def accuracy_curve(run_dir: str, batch_size: int) -> list[tuple[int, float]]:
    """(samples seen, zero-shot top-1) from the run's metrics.jsonl."""
    curve = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            if "eval/zeroshot/top1" in record:
                curve.append((record["step"] * batch_size, record["eval/zeroshot/top1"]))
    return curve


def samples_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((samples for samples, accuracy in curve if accuracy >= target), None)


def learning_efficiency(reinforced: list, baseline: list) -> dict:
    """The paper's measure: the baseline's samples over the samples the reinforced student needs to reach the
    baseline's final accuracy (> 1: reinforced training is more sample-efficient); and the converse, for when the
    reinforced student ends lower."""
    (baseline_samples, baseline_final), (reinforced_samples, reinforced_final) = baseline[-1], reinforced[-1]
    reached = samples_to_reach(reinforced, baseline_final)
    converse = samples_to_reach(baseline, reinforced_final)
    return {
        "baseline_final_top1": baseline_final, "baseline_samples": baseline_samples,
        "reinforced_samples_to_reach_it": reached, "ratio": baseline_samples / reached if reached else None,
        "reinforced_final_top1": reinforced_final,
        "baseline_samples_to_reach_reinforced_final": converse,
        "converse_ratio": converse / reinforced_samples if converse else None,
    }


def plot(curves: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot([s for s, _ in curve], [100 * a for _, a in curve], marker="o", label=name)
    ax.set(xlabel="training samples seen", ylabel="zero-shot top-1 on the test split (%)",
           title="MobileCLIP student on Fashion-MNIST")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=os.path.join("outputs", "fashion_mnist"))
    parser.add_argument("--data", default=os.path.join(HERE, "data"),
                        help="folder of train/test.parquet, or a Hub dataset id with image and label columns")
    parser.add_argument("--teacher-steps", type=int, default=250)
    parser.add_argument("--student-steps", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-augmentations", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few steps each (for tests)")
    args = parser.parse_args()
    if args.quick:
        args.teacher_steps, args.student_steps, args.num_augmentations = 4, 4, 2
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(args.output, exist_ok=True)
    start = time.time()

    captioned = captioned_splits(args.output, args.data)
    zeroshot_eval = dict(eval_zeroshot_dataset=captioned, eval_zeroshot_split="test", eval_templates=TEMPLATES,
                         eval_class_names=CLASS_NAMES)
    teachers = []
    for seed, (name, vision) in enumerate(TEACHERS.items()):
        init = init_model_folder(os.path.join(args.output, "init", name), model_config(vision, **TEACHER_TEXT), seed)
        teachers.append(run_training(name, args.output, dict(
            model=init, recipe="clip", train_dataset=captioned, global_batch_size=args.batch_size,
            train_steps=args.teacher_steps, lr=2e-3, seed=seed, interpolation="bilinear", **zeroshot_eval)))
    reinforced = reinforce(captioned, teachers, args.output, args.num_augmentations, 512 if args.quick else None)

    student_init = init_model_folder(os.path.join(args.output, "init", "student"), model_config(STUDENT, 64, 2), 10)
    eval_every = max(1, args.student_steps // 10)
    students = {}
    for name, recipe, data in (("student_reinforced", "reinforced", reinforced), ("student_clip", "clip", captioned)):
        students[name] = run_training(name, args.output, dict(
            model=student_init, recipe=recipe, train_dataset=data, global_batch_size=args.batch_size,
            train_steps=args.student_steps, lr=2e-3, seed=10, interpolation="bilinear", eval_every=eval_every,
            **zeroshot_eval))

    results = {"teachers": {name: evaluate(path, captioned) for name, path in zip(TEACHERS, teachers)}}
    results["students"] = {name: evaluate(path, captioned) for name, path in students.items()}
    curves = {name: accuracy_curve(path, args.batch_size) for name, path in students.items()}
    results["curves"] = curves
    results["learning_efficiency"] = learning_efficiency(curves["student_reinforced"], curves["student_clip"])
    with open(os.path.join(args.output, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    plot(curves, os.path.join(args.output, "accuracy.png"))

    columns = ["zeroshot_top1", "zeroshot_top5", "image_to_text_R@1", "image_to_text_R@5", "text_to_image_R@1",
               "text_to_image_R@5"]
    print("\n| model | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for group in ("teachers", "students"):
        for name, metrics in results[group].items():
            print(f"| {name} | " + " | ".join(f"{100 * metrics[c]:.1f}" for c in columns) + " |")
    efficiency = results["learning_efficiency"]
    if efficiency["ratio"]:
        print(f"\nlearning efficiency: the CLIP baseline ends at {100 * efficiency['baseline_final_top1']:.1f}% after "
              f"{efficiency['baseline_samples']} samples; the reinforced student reaches it after "
              f"{efficiency['reinforced_samples_to_reach_it']} samples: {efficiency['ratio']:.2f}x.")
    else:
        converse = efficiency["baseline_samples_to_reach_reinforced_final"]
        print("\nlearning efficiency: the reinforced student ends at "
              f"{100 * efficiency['reinforced_final_top1']:.1f}%, "
              f"below the CLIP baseline's {100 * efficiency['baseline_final_top1']:.1f}% (ratio < 1); the baseline "
              f"reaches {100 * efficiency['reinforced_final_top1']:.1f}% after {converse} samples, "
              f"{efficiency['converse_ratio'] or 0:.2f}x the {curves['student_reinforced'][-1][0]} the reinforced "
              "student took.")

    from transformers import AutoModel, pipeline

    student = AutoModel.from_pretrained(students["student_reinforced"])
    test = load_dataset("parquet", data_files=os.path.join(captioned, "test.parquet"), split="train")
    classifier = pipeline("zero-shot-image-classification", model=student,
                          tokenizer=MobileCLIPTokenizer.from_pretrained(students["student_reinforced"]),
                          image_processor=MobileCLIPImageProcessor.from_pretrained(students["student_reinforced"]))
    prediction = classifier(test[0]["image"].convert("RGB"), candidate_labels=CLASS_NAMES)[0]
    print(f"pipeline on test image 0 (a {CLASS_NAMES[test[0]['label']]}): {prediction['label']} "
          f"({prediction['score']:.2f})")
    print(f"results: {args.output}/results.json, {args.output}/accuracy.png ({time.time() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
