"""Model cards: Hub metadata and model-index entries that round-trip, and a usage snippet that runs."""

import re

from huggingface_hub import ModelCard

from modeling_mobileclip import MobileCLIPModel, MobileCLIPProcessor
from modeling_mobileclip.modelcard import APPLE_MODEL_LICENSE, eval_entries, model_card

from conftest import tiny_config


def test_model_card_metadata_round_trips_and_its_snippet_runs(tmp_path):
    metrics = {"eval/zeroshot/top1": 0.8125, "eval/retrieval/text_to_image_R@1": 0.5, "train/loss": 3.0}
    card = model_card("Tiny MobileCLIP", "Converted from `x.pt`; embeddings checked against open_clip.", str(tmp_path),
                      APPLE_MODEL_LICENSE, base_model="apple/MobileCLIP-S0", datasets=["fashion_mnist"],
                      evaluations=eval_entries(metrics, "fashion_mnist"))
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    assert loaded.data.license == "apple-amlr" and loaded.data.pipeline_tag == "zero-shot-image-classification"
    assert loaded.data.library_name == "transformers" and loaded.data.base_model == "apple/MobileCLIP-S0"
    results = {(r.task_type, r.metric_name): r.metric_value for r in loaded.data.eval_results}
    assert results == {("zero-shot-image-classification", "top1"): 0.8125,
                       ("image-text-retrieval", "text_to_image_R@1"): 0.5}  # train/ metrics are not evaluations
    assert "| fashion_mnist (test) | zeroshot | top1 | 81.2 |" in loaded.text
    # The usage snippet loads the folder it names.
    config = tiny_config(context_length=77)
    MobileCLIPModel(config).save_pretrained(tmp_path)
    MobileCLIPProcessor.from_variant("mobileclip-s0").save_pretrained(tmp_path)
    snippet = re.search(r"```python\n(.*?)```", loaded.text, re.S).group(1)
    namespace = {}
    exec(snippet, namespace)
    assert namespace["model"].config.projection_dim == config.projection_dim
    assert namespace["classifier"].task == "zero-shot-image-classification"
