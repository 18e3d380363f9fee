"""Zero-shot classification and image-text retrieval for MobileCLIP (or any transformers CLIP-style model).

Zero-shot classification embeds every class name in several prompt templates and averages the normalised embeddings
(prompt ensembling, CLIP paper Sec. 3.1.4); retrieval reports R@1/5/10 image->text and text->image, an image
counting as found by a text if it is that text's image, and a text by an image if any of the image's captions is
ranked that high.

Usage (on any saved model, e.g. a training run's `output_dir`):

    python -m train.evaluate --model outputs/run --dataset PATH_OR_HUB_ID --split test [--task zeroshot|retrieval]

Zero-shot needs an `image` column and an integer `label` column (class names from its `ClassLabel` or
`--class-names`); retrieval needs `image` and `caption` (one string or a list of strings per image).
"""

import argparse
import contextlib
import functools
import json
import os

import evaluate
import torch
import torch.nn.functional as F
from datasets import ClassLabel

from modeling_mobileclip.atomic import write_json
from modeling_mobileclip.inference import pooled_output

# The loaders live in the library; imported here too, where the training and evaluation scripts have used them.
from modeling_mobileclip.loading import load_model, load_model_and_processor, load_processor  # noqa: F401

from .data import Tokenize, decode_image, load_rows

# open_clip's SIMPLE_IMAGENET_TEMPLATES and OPENAI_IMAGENET_TEMPLATES (the 80 prompts of the CLIP paper, which
# MobileCLIP's ImageNet evaluation uses through clip_benchmark).
TEMPLATES = {
    "photo": ("a photo of a {}.",),
    "simple": (
        "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
        "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
    ),
    "openai": tuple(
        t.replace("_", "{}")
        for t in (
            "a bad photo of a _.", "a photo of many _.", "a sculpture of a _.", "a photo of the hard to see _.",
            "a low resolution photo of the _.", "a rendering of a _.", "graffiti of a _.", "a bad photo of the _.",
            "a cropped photo of the _.", "a tattoo of a _.", "the embroidered _.", "a photo of a hard to see _.",
            "a bright photo of a _.", "a photo of a clean _.", "a photo of a dirty _.", "a dark photo of the _.",
            "a drawing of a _.", "a photo of my _.", "the plastic _.", "a photo of the cool _.",
            "a close-up photo of a _.", "a black and white photo of the _.", "a painting of the _.",
            "a painting of a _.", "a pixelated photo of the _.", "a sculpture of the _.", "a bright photo of the _.",
            "a cropped photo of a _.", "a plastic _.", "a photo of the dirty _.", "a jpeg corrupted photo of a _.",
            "a blurry photo of the _.", "a photo of the _.", "a good photo of the _.", "a rendering of the _.",
            "a _ in a video game.", "a photo of one _.", "a doodle of a _.", "a close-up photo of the _.",
            "a photo of a _.", "the origami _.", "the _ in a video game.", "a sketch of a _.", "a doodle of the _.",
            "a origami _.", "a low resolution photo of a _.", "the toy _.", "a rendition of the _.",
            "a photo of the clean _.", "a photo of a large _.", "a rendition of a _.", "a photo of a nice _.",
            "a photo of a weird _.", "a blurry photo of a _.", "a cartoon _.", "art of a _.", "a sketch of the _.",
            "a embroidered _.", "a pixelated photo of a _.", "itap of the _.", "a jpeg corrupted photo of the _.",
            "a good photo of a _.", "a plushie _.", "a photo of the nice _.", "a photo of the small _.",
            "a photo of the weird _.", "the cartoon _.", "art of the _.", "a drawing of the _.",
            "a photo of the large _.", "a black and white photo of a _.", "the plushie _.", "a dark photo of a _.",
            "itap of a _.", "graffiti of the _.", "a toy _.", "itap of my _.", "a photo of a cool _.",
            "a photo of a small _.", "a tattoo of the _.",
        )
    ),
}


# ---------------------------------------------------------------------------------------------------------------------
# Embedding


def context_length(config) -> int:
    """Text context length of a MobileCLIP or CLIP config."""
    return config.text_config.max_position_embeddings


class ImageRows(torch.utils.data.Dataset):
    """Rows of a datasets `Dataset` as `{"pixel_values", "index", "label"?}`, preprocessed for evaluation."""

    def __init__(self, dataset, image_processor, image_column: str = "image", label_column: str | None = None):
        self.dataset, self.image_processor = dataset, image_processor
        self.image_column, self.label_column = image_column, label_column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        row = self.dataset[index]
        image = decode_image(row[self.image_column])
        item = {"pixel_values": self.image_processor(image, return_tensors="pt")["pixel_values"][0], "index": index}
        if self.label_column is not None:
            item["label"] = int(row[self.label_column])
        return item


def image_dataloader(dataset, image_processor, batch_size: int = 256, num_workers: int = 0, **columns):
    """An evaluation DataLoader over `ImageRows` (`columns`: `image_column`, `label_column`)."""
    return torch.utils.data.DataLoader(
        ImageRows(dataset, image_processor, **columns), batch_size=batch_size, num_workers=num_workers
    )


@torch.no_grad()
def embed_images(model, dataloader, accelerator=None) -> dict[str, torch.Tensor]:
    """L2-normalised image features of every row, in dataset order, with the rows' labels if any.

    With an `accelerator` the dataloader must be prepared: each process embeds its shard, and `gather_for_metrics`
    collects all rows (dropping the duplicates that even out the last batch).
    """
    device = accelerator.device if accelerator else next(model.parameters()).device
    outputs = {}
    for batch in dataloader:
        with accelerator.autocast() if accelerator else contextlib.nullcontext():
            features = pooled_output(model.get_image_features(pixel_values=batch["pixel_values"].to(device)))
        step = {k: v.to(device) for k, v in batch.items() if k != "pixel_values"}
        step["features"] = F.normalize(features.float(), dim=-1)
        if accelerator:
            step = accelerator.gather_for_metrics(step)
        for key, value in step.items():
            outputs.setdefault(key, []).append(value.cpu())
    outputs = {key: torch.cat(values) for key, values in outputs.items()}
    order = outputs["index"].argsort()
    return {key: value[order] for key, value in outputs.items()}


@torch.no_grad()
def embed_texts(model, tokenizer, texts: list[str], batch_size: int = 256, accelerator=None) -> torch.Tensor:
    """L2-normalised text features, `(len(texts), dim)`, computed on every process (texts are cheap)."""
    device = accelerator.device if accelerator else next(model.parameters()).device
    tokenize = Tokenize(tokenizer, context_length(model.config))
    features = []
    for start in range(0, len(texts), batch_size):
        input_ids = tokenize(texts[start : start + batch_size]).to(device)
        with accelerator.autocast() if accelerator else contextlib.nullcontext():
            features.append(F.normalize(pooled_output(model.get_text_features(input_ids=input_ids)).float(), dim=-1))
    return torch.cat(features).cpu()


def zero_shot_classifier(model, tokenizer, class_names: list[str], templates, batch_size: int = 256, accelerator=None):
    """`(num_classes, dim)` class embeddings: the normalised mean of each class's normalised prompt embeddings."""
    templates = TEMPLATES[templates] if isinstance(templates, str) else tuple(templates)
    prompts = [template.format(name) for name in class_names for template in templates]
    features = embed_texts(model, tokenizer, prompts, batch_size, accelerator)
    return F.normalize(features.view(len(class_names), len(templates), -1).mean(dim=1), dim=-1)


# ---------------------------------------------------------------------------------------------------------------------
# Metrics


# The metrics are an `evaluate` module shipped with this package (loaded by path, no Hub access). It states the tie
# rule that keeps them independent of the evaluation batch size and the machine: similarities within 1e-4 are ties,
# broken at random, and each metric is that expectation.
RANK_RECALL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics", "rank_recall")


@functools.cache
def _rank_recall(task: str):
    return evaluate.load(RANK_RECALL, task)


def zero_shot_metrics(image_features: torch.Tensor, labels: torch.Tensor, classifier: torch.Tensor, topk=(1, 5)):
    """Top-k accuracies (for k up to the number of classes) of `image_features @ classifierᵀ` (`rank_recall`)."""
    logits = (image_features.float() @ classifier.float().T).numpy()
    return _rank_recall("zeroshot").compute(predictions=logits, references=labels.numpy(), ks=topk)


def retrieval_metrics(image_features, text_features, text_to_image: torch.Tensor, ks=(1, 5, 10)) -> dict:
    """Recall@k both ways for `text_features[t]` describing `image_features[text_to_image[t]]` (`rank_recall`).

    Text -> image: the rank of the text's own image among all images. Image -> text: the best rank of any of the
    image's own captions among all texts.

    Returns:
        `image_to_text_R@k`, `text_to_image_R@k` for every k, and their overall mean `mean_recall`.
    """
    similarity = (text_features.float() @ image_features.float().T).numpy()  # (texts, images)
    return _rank_recall("retrieval").compute(predictions=similarity, references=text_to_image.numpy(), ks=ks)


def class_retrieval_metrics(query_features, candidate_features, query_labels, candidate_labels, ks=(1, 5, 10)):
    """Recall@k of class-level retrieval: a query finds any candidate of its own class (`rank_recall`)."""
    similarity = (query_features.float() @ candidate_features.float().T).numpy()
    return _rank_recall("class_retrieval").compute(predictions=similarity, references=query_labels.numpy(), ks=ks,
                                                   candidate_labels=candidate_labels.numpy())


# ---------------------------------------------------------------------------------------------------------------------
# Datasets


def class_names_of(dataset, label_column: str = "label", class_names: list[str] | None = None) -> list[str]:
    """Class names given explicitly, or those of the label column's `ClassLabel`."""
    if class_names:
        return list(class_names)
    feature = dataset.features.get(label_column)
    if isinstance(feature, ClassLabel):
        return [name.replace("_", " ") for name in feature.names]
    raise ValueError(f"Column {label_column!r} is not a ClassLabel: pass the class names (--class-names).")


def captions_of(dataset, caption_column: str = "caption") -> tuple[list[str], torch.Tensor]:
    """All captions, flattened, and the index of each caption's image (a row may hold one caption or a list)."""
    texts, owners = [], []
    for index, value in enumerate(dataset[caption_column]):
        captions = [value] if isinstance(value, str) else list(value)
        texts += captions
        owners += [index] * len(captions)
    return texts, torch.tensor(owners)


def evaluate_zero_shot(model, tokenizer, dataloader, class_names, templates="openai", accelerator=None) -> dict:
    """Zero-shot accuracy on a labelled `image_dataloader` (prepared, when an `accelerator` is given)."""
    images = embed_images(model, dataloader, accelerator)
    classifier = zero_shot_classifier(model, tokenizer, class_names, templates, accelerator=accelerator)
    return zero_shot_metrics(images["features"], images["label"], classifier)


def evaluate_retrieval(model, tokenizer, dataloader, texts, text_to_image, accelerator=None) -> dict:
    """Retrieval recalls between the images of `dataloader` and their captions (`captions_of`)."""
    images = embed_images(model, dataloader, accelerator)
    texts = embed_texts(model, tokenizer, texts, accelerator=accelerator)
    return retrieval_metrics(images["features"], texts, text_to_image)


def load_eval_task(
    task: str,
    source: str,
    split: str,
    image_processor,
    class_names: list[str] | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    max_samples: int | None = None,
    cache_dir: str | None = None,
    columns: dict[str, str] | None = None,
) -> dict:
    """Loads one evaluation for `run_eval_tasks`: a DataLoader plus class names (zeroshot) or captions (retrieval).

    Args:
        task: `"zeroshot"` or `"retrieval"`.
        source: local dataset folder or Hub dataset id; `split` its split.
        columns: column names, default `{"image": "image", "label": "label", "caption": "caption"}`.
    """
    columns = {"image": "image", "label": "label", "caption": "caption", **(columns or {})}
    dataset = load_rows(source, split, cache_dir=cache_dir)
    if max_samples:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    label = columns["label"] if task == "zeroshot" else None
    loader = image_dataloader(dataset, image_processor, batch_size, num_workers, image_column=columns["image"],
                              label_column=label)
    if task == "zeroshot":
        return {"loader": loader, "class_names": class_names_of(dataset, label, class_names)}
    texts, text_to_image = captions_of(dataset, columns["caption"])
    return {"loader": loader, "texts": texts, "text_to_image": text_to_image}


def run_eval_tasks(model, tokenizer, tasks: dict[str, dict], templates="openai", accelerator=None) -> dict:
    """Runs `load_eval_task` results (`{"zeroshot": ..., "retrieval": ...}`) in eval mode; metrics as `task/name`."""
    was_training = model.training
    model.eval()
    metrics = {}
    for task, t in tasks.items():
        if task == "zeroshot":
            result = evaluate_zero_shot(model, tokenizer, t["loader"], t["class_names"], templates, accelerator)
        else:
            result = evaluate_retrieval(model, tokenizer, t["loader"], t["texts"], t["text_to_image"], accelerator)
        metrics.update({f"{task}/{key}": value for key, value in result.items()})
    model.train(was_training)
    return metrics


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="saved model folder or Hub id (a variant name or a "
                        "config-only folder with --random-init)")
    parser.add_argument("--random-init", action="store_true",
                        help="evaluate the architecture of --model with random weights (a chance-level baseline)")
    parser.add_argument("--dataset", required=True, help="local dataset folder or Hub dataset id")
    parser.add_argument("--split", default="test")
    parser.add_argument("--task", choices=("auto", "zeroshot", "retrieval"), default="auto",
                        help="auto: zeroshot if the dataset has the label column, else retrieval")
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--caption-column", default="caption")
    parser.add_argument("--class-names", help="JSON file with a list of class names (default: the ClassLabel's)")
    parser.add_argument("--templates", default="openai", help=f"one of {sorted(TEMPLATES)} or a JSON file of templates")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--max-samples", type=int, help="evaluate on the first N rows only")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cache-dir", help="datasets cache folder (default: HF_DATASETS_CACHE)")
    parser.add_argument("--output", help="also write the metrics to this JSON file")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    """CLI entry point; prints and returns the metrics."""
    args = parse_args(argv)
    model, processor = load_model_and_processor(args.model, args.random_init)
    model = model.to(args.device).eval()
    task = args.task
    if task == "auto":
        columns = load_rows(args.dataset, args.split, cache_dir=args.cache_dir).column_names
        task = "zeroshot" if args.label_column in columns else "retrieval"
    class_names = json.load(open(args.class_names)) if args.class_names else None
    templates = args.templates if args.templates in TEMPLATES else json.load(open(args.templates))
    columns = {"image": args.image_column, "label": args.label_column, "caption": args.caption_column}
    loaded = load_eval_task(task, args.dataset, args.split, processor.image_processor, class_names, args.batch_size,
                            args.num_workers, args.max_samples, args.cache_dir, columns)
    metrics = run_eval_tasks(model, processor.tokenizer, {task: loaded}, templates)
    print(json.dumps(metrics, indent=2))
    if args.output:
        write_json(args.output, metrics)
    return metrics


__all__ = [
    "TEMPLATES",
    "ImageRows",
    "captions_of",
    "class_retrieval_metrics",
    "class_names_of",
    "context_length",
    "embed_images",
    "embed_texts",
    "evaluate_retrieval",
    "evaluate_zero_shot",
    "image_dataloader",
    "load_eval_task",
    "load_model",
    "load_model_and_processor",
    "load_processor",
    "main",
    "retrieval_metrics",
    "run_eval_tasks",
    "zero_shot_classifier",
    "zero_shot_metrics",
]

if __name__ == "__main__":
    main()
