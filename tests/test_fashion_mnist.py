"""The Fashion-MNIST demo's parts: the web-caption noise, the committed models' checksums, learning efficiency."""

import hashlib
import importlib.util
import os
import sys

import pytest

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "fashion_mnist")


def _example_module(name: str):
    """The example's `<name>.py`, imported under its own name as its scripts see it (their folder is on their
    sys.path), so that demo's `from captions import ...` and `from pretrain import ...` find these."""
    path = os.path.join(EXAMPLE, f"{name}.py")
    if getattr(sys.modules.get(name), "__file__", None) != path:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


captions = _example_module("captions")
_example_module("prepare"), _example_module("pretrain")  # demo.py imports them
demo = _example_module("demo")
ALT_TEXTS, CLASS_NAMES, TEMPLATES = captions.ALT_TEXTS, captions.CLASS_NAMES, captions.TEMPLATES
WEB_MIXTURE, caption_class, web_captions = captions.WEB_MIXTURE, captions.caption_class, captions.web_captions
PRETRAINED, verify_checksums = demo.PRETRAINED, demo.verify_checksums
learning_efficiency, samples_to_reach = demo.learning_efficiency, demo.samples_to_reach


def test_web_captions_are_seeded_with_the_documented_fractions():
    labels = [i % 10 for i in range(1000)]
    captions, kinds = web_captions(labels, seed=3)
    assert (captions, kinds) == web_captions(labels, seed=3)
    assert captions != web_captions(labels, seed=4)[0]
    assert {k: kinds.count(k) / len(kinds) for k in WEB_MIXTURE} == WEB_MIXTURE == {
        "correct": 0.25, "wrong_class": 0.25, "alt_text": 0.5}
    for caption, kind, label in zip(captions, kinds, labels):
        named = caption_class(caption)
        if kind == "correct":
            assert named == label and caption in [t.format(CLASS_NAMES[label]) for t in TEMPLATES]
        elif kind == "wrong_class":
            assert named is not None and named != label
        else:
            assert named is None and any(caption.startswith(a.split("{")[0]) for a in ALT_TEXTS)


def test_committed_models_match_their_sha256_and_load():
    from dataset_builder import TransformersCaptioner, TransformersTeacher

    recorded = verify_checksums(PRETRAINED)
    for name in ("teacher_mci_seed0", "teacher_mci_seed1", "captioner"):
        assert f"{name}/model.safetensors" in recorded
        assert os.path.getsize(os.path.join(PRETRAINED, name, "model.safetensors")) < 8e6
    teacher = TransformersTeacher.from_pretrained(os.path.join(PRETRAINED, "teacher_mci_seed0"))
    assert teacher.dim == 128 and teacher.image_size == 32
    captioner = TransformersCaptioner.from_pretrained(os.path.join(PRETRAINED, "captioner"))
    from PIL import Image

    captions = captioner.caption([Image.new("RGB", (28, 28))], 2, [0])
    assert len(captions) == 1 and len(captions[0]) == 2 and all(isinstance(c, str) for c in captions[0])


def test_a_changed_model_file_is_refused(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  m/model.safetensors\n")
    assert verify_checksums(str(tmp_path)) == {"m/model.safetensors": digest}
    (tmp_path / "m" / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(ValueError, match="sha256"):
        verify_checksums(str(tmp_path))
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        verify_checksums(str(tmp_path))


def test_samples_to_reach_interpolates_from_chance():
    curve = [(100, 0.3), (200, 0.5), (300, 0.9)]
    assert samples_to_reach(curve, 0.4) == pytest.approx(150)
    assert samples_to_reach(curve, 0.8) == pytest.approx(275)
    assert samples_to_reach(curve, 0.2) == pytest.approx(50)  # between 0 samples (chance, 10%) and the first point
    assert samples_to_reach(curve, 0.95) is None


def test_learning_efficiency_measured_and_lower_bound():
    reinforced = [(100, 0.5), (200, 0.7)]
    baseline = [(100, 0.3), (200, 0.4), (400, 0.6), (800, 0.8)]
    efficiency = learning_efficiency(reinforced, baseline)
    assert efficiency["baseline_samples_to_reach_reinforced_final"] == pytest.approx(600)
    assert efficiency["ratio"] == pytest.approx(3.0) and not efficiency["lower_bound"]
    assert efficiency["reinforced_samples_to_reach_baseline_final"] is None
    # The baseline never gets there: the ratio is its budget over the reinforced samples, flagged as a bound.
    efficiency = learning_efficiency([(100, 0.85), (200, 0.9)], baseline)
    assert efficiency["baseline_samples_to_reach_reinforced_final"] is None
    assert efficiency["ratio"] == pytest.approx(4.0) and efficiency["lower_bound"]
    # Interpolated from (0 samples, chance) to the first point.
    assert efficiency["reinforced_samples_to_reach_baseline_final"] == pytest.approx(100 * 0.7 / 0.75)
