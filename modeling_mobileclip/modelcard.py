"""Model cards (`README.md`) for every model folder this project writes: converted checkpoints, trained students.

The card is a Hub model card: YAML metadata (library, pipeline tag, licence, base model, datasets, tags, and the
evaluation results as `model-index` entries, through huggingface_hub's `ModelCard` / `EvalResult`), then how the model
was made and a usage snippet that runs on the folder or its Hub id.
"""

from dataclasses import dataclass

from huggingface_hub import EvalResult, ModelCard, ModelCardData

# Apple's released MobileCLIP and MobileCLIP2 weights are under the Apple Machine Learning Research Model licence.
APPLE_MODEL_LICENSE = "apple-amlr"
TASKS = {  # metric-name prefix -> (Hub task type, Hub metric type)
    "zeroshot": ("zero-shot-image-classification", "accuracy"),
    "retrieval": ("image-text-retrieval", "recall"),
}


@dataclass
class EvalEntry:
    """One measured number: `task` is `"zeroshot"` or `"retrieval"`, `metric` e.g. `"top1"` or `"text_to_image_R@1"`."""

    task: str
    metric: str
    value: float
    dataset: str
    split: str = "test"


def eval_entries(metrics: dict[str, float], dataset: str, split: str = "test") -> list[EvalEntry]:
    """`EvalEntry`s from `train.evaluate`-style metrics (`"zeroshot/top1"`, `"retrieval/mean_recall"`, ...)."""
    entries = []
    for name, value in metrics.items():
        task, _, metric = name.removeprefix("eval/").partition("/")
        if task in TASKS:
            entries.append(EvalEntry(task, metric, float(value), dataset, split))
    return entries


def usage_snippet(repo_or_path: str) -> str:
    return f'''```python
from transformers import AutoModel, AutoProcessor, pipeline

model = AutoModel.from_pretrained("{repo_or_path}", trust_remote_code=True).reparameterize().eval()
processor = AutoProcessor.from_pretrained("{repo_or_path}", trust_remote_code=True)
classifier = pipeline("zero-shot-image-classification", model="{repo_or_path}", trust_remote_code=True)
```

With this project installed (`import modeling_mobileclip`), `trust_remote_code` is not needed.'''


def model_card(
    name: str,
    how_made: str,
    repo_or_path: str,
    license: str,
    base_model: str | None = None,
    datasets: list[str] | None = None,
    tags: list[str] = (),
    evaluations: list[EvalEntry] = (),
) -> ModelCard:
    """A model card for a MobileCLIP folder.

    Args:
        name: the model's name (the card's title and `model-index` name).
        how_made: Markdown: where the weights come from (source checkpoint and the parity checked, or the training
            recipe, dataset, steps and teachers).
        repo_or_path: what the usage snippet loads (the Hub id it will be pushed to, or the folder).
        license: a Hub licence id (`APPLE_MODEL_LICENSE` for converted Apple weights; the user's choice otherwise).
        evaluations: measured results, written as `model-index` entries and as a table.
    """
    results = [
        EvalResult(
            task_type=TASKS[e.task][0], dataset_type=e.dataset, dataset_name=e.dataset, dataset_split=e.split,
            metric_type=TASKS[e.task][1], metric_name=e.metric, metric_value=e.value,
        )
        for e in evaluations
    ]
    data = ModelCardData(
        library_name="transformers", pipeline_tag="zero-shot-image-classification", license=license,
        base_model=base_model, datasets=list(datasets) if datasets else None,
        tags=["mobileclip", "clip", "image-text", *tags], model_name=name, eval_results=results or None,
    )
    sections = [f"# {name}", how_made.strip(), "## Usage", usage_snippet(repo_or_path)]
    if evaluations:
        rows = [f"| {e.dataset} ({e.split}) | {e.task} | {e.metric} | {e.value * 100:.1f} |" for e in evaluations]
        sections += ["## Evaluation", "| dataset | task | metric | % |\n|---|---|---|---|\n" + "\n".join(rows)]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n\n".join(sections) + "\n")


__all__ = ["APPLE_MODEL_LICENSE", "EvalEntry", "eval_entries", "model_card", "usage_snippet"]
