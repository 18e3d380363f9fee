"""Saved folders as Hub repos: Auto classes, remote code in a fresh process, and both pipelines."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
    AutoTokenizer,
    pipeline,
)

from modeling_mobileclip import (
    MobileCLIPImageProcessor,
    MobileCLIPModel,
    MobileCLIPProcessor,
    MobileCLIPTokenizer,
    MobileCLIPVisionModelWithProjection,
)

from conftest import randomize_, tiny_config

LABELS = ["cat", "dog", "a very long label with many more words than the others"]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny S0-like model (MCt text, MCi image) and its processor, saved as a Hub repo would hold them."""
    path = tmp_path_factory.mktemp("tiny-mobileclip")
    torch.manual_seed(0)
    model = randomize_(MobileCLIPModel(tiny_config("mct", context_length=77)))
    processor = MobileCLIPProcessor(
        MobileCLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64}),
        MobileCLIPTokenizer(),
    )
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def photo(seed=0, size=(96, 80)):
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3)
    return Image.fromarray((gradient * 0.5 + rng.integers(0, 128, gradient.shape)).astype(np.uint8))


def test_saved_files_and_auto_map(saved_model):
    config = json.loads((saved_model / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_mobileclip.MobileCLIPConfig",
        "AutoModel": "modeling_mobileclip.MobileCLIPModel",
        "AutoModelForZeroShotImageClassification": "modeling_mobileclip.MobileCLIPModel",
    }
    for name in ("model.safetensors", "configuration_mobileclip.py", "modeling_mobileclip.py", "tokenizer.json"):
        assert (saved_model / name).exists(), name


def test_auto_classes_resolve_to_the_package(saved_model):
    assert type(AutoConfig.from_pretrained(saved_model)).__name__ == "MobileCLIPConfig"
    assert type(AutoModel.from_pretrained(saved_model)) is MobileCLIPModel
    assert type(AutoModelForZeroShotImageClassification.from_pretrained(saved_model)) is MobileCLIPModel
    assert type(AutoProcessor.from_pretrained(saved_model)) is MobileCLIPProcessor
    assert type(AutoTokenizer.from_pretrained(saved_model)) is MobileCLIPTokenizer
    assert type(AutoImageProcessor.from_pretrained(saved_model)) is MobileCLIPImageProcessor


def test_trust_remote_code_in_a_fresh_process(saved_model, tmp_path):
    """A user without this package: the folder's own code must load model, tokenizer and processor."""
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModel, AutoProcessor, AutoTokenizer
        path = {str(saved_model)!r}
        model = AutoModel.from_pretrained(path, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
        assert "modeling_mobileclip" not in sys.modules, "the installed package was imported"
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        ids = tokenizer(["a photo of a cat"], padding="max_length", truncation=True, return_tensors="pt")["input_ids"]
        assert ids.shape == (1, 77) and ids[0, -1] == 0
        with torch.no_grad():
            emb = model.get_text_features(ids).pooler_output
        print(type(processor).__name__, type(tokenizer).__name__, emb[0, :4].tolist())
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"))
    # Run from an empty folder so that neither the repo nor its tests are importable.
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    processor_name, tokenizer_name, *_ = result.stdout.split()
    assert (processor_name, tokenizer_name) == ("MobileCLIPProcessor", "MobileCLIPTokenizer")

    model = MobileCLIPModel.from_pretrained(saved_model).eval()
    ids = MobileCLIPTokenizer()(["a photo of a cat"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model.get_text_features(ids).pooler_output[0, :4].tolist()
    remote = json.loads(result.stdout.split(maxsplit=2)[2])
    np.testing.assert_allclose(remote, expected, rtol=1e-6)


def test_zero_shot_pipeline_equals_manual_computation(saved_model):
    classifier = pipeline("zero-shot-image-classification", model=str(saved_model))
    image = photo()
    results = classifier(image, candidate_labels=LABELS)

    model = MobileCLIPModel.from_pretrained(saved_model).eval()
    processor = MobileCLIPProcessor.from_pretrained(saved_model)
    texts = [f"This is a photo of {label}." for label in LABELS]  # the pipeline's default template
    inputs = processor(images=image, text=texts, return_tensors="pt")
    with torch.no_grad():
        probs = model(**inputs).logits_per_image.softmax(-1)[0]
    expected = sorted(zip(probs.tolist(), LABELS), reverse=True)
    assert [r["label"] for r in results] == [label for _, label in expected]
    np.testing.assert_allclose([r["score"] for r in results], [p for p, _ in expected], rtol=1e-5, atol=1e-7)


def test_image_feature_extraction_pipeline(saved_model):
    image = photo(1)
    model = MobileCLIPModel.from_pretrained(saved_model).eval()
    pixel_values = MobileCLIPImageProcessor.from_pretrained(saved_model)(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        embeds = model(pixel_values=pixel_values).image_embeds
        projected = model.get_image_features(pixel_values).pooler_output

    extractor = pipeline("image-feature-extraction", model=str(saved_model))
    np.testing.assert_allclose(np.array(extractor(image)), embeds.numpy(), rtol=1e-5, atol=1e-6)

    vision = MobileCLIPVisionModelWithProjection.from_pretrained(saved_model).eval()
    extractor = pipeline("image-feature-extraction", model=vision, image_processor=extractor.image_processor)
    np.testing.assert_allclose(np.array(extractor(image)), projected.numpy(), rtol=1e-5, atol=1e-6)
    assert np.array(extractor(image, pool=True)).shape == (1, model.vision_model.num_features)
