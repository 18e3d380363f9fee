"""Zero-shot and retrieval metrics: the tie rule against brute-force enumeration, independence of the evaluation
batch size and of float rounding, and the loader's refusal to score a model without weights."""

import itertools

import evaluate
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import ClassLabel, Dataset, Features, Image, List, Value

from modeling_mobileclip import MobileCLIPImageProcessor, MobileCLIPModel, MobileCLIPTokenizer
from train.evaluate import (
    RANK_RECALL,
    class_retrieval_metrics,
    evaluate_retrieval,
    evaluate_zero_shot,
    image_dataloader,
    load_model,
    retrieval_metrics,
    zero_shot_metrics,
)
from train.evaluate import (
    main as evaluate_main,
)

from conftest import tiny_config


def brute_force_recall(scores: torch.Tensor, is_own: torch.Tensor, k: int) -> float:
    """Mean over queries of P(an own candidate is in the top k), averaging over every order of the tied candidates.

    Scores are exact here (small integers), so ties are exact and no tolerance is involved.
    """
    found = []
    for row, own in zip(scores.tolist(), is_own.tolist()):
        best = max(s for s, o in zip(row, own) if o)
        above = sum(s > best and not o for s, o in zip(row, own))
        group = [o for s, o in zip(row, own) if s == best]  # the tied candidates, own or not
        hits = [any(order[: max(0, k - above)]) for order in itertools.permutations(group)]
        found.append(sum(hits) / len(hits))
    return sum(found) / len(found)


def test_tie_rule_matches_enumeration_of_tie_orders():
    # Similarities on a coarse grid (many exact ties): retrieval_metrics sees them through identity image features.
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        similarity = torch.randint(0, 3, (7, 4), generator=generator).float() / 4  # (texts, images)
        owners = torch.randint(0, 4, (7,), generator=generator)
        is_own = owners[:, None] == torch.arange(4)[None, :]
        for k in (1, 2, 3):
            metrics = retrieval_metrics(torch.eye(4), similarity, owners, ks=(k,))
            assert metrics[f"text_to_image_R@{k}"] == pytest.approx(brute_force_recall(similarity, is_own, k))
            if is_own.any(0).all():  # image -> text: several own captions per image
                assert metrics[f"image_to_text_R@{k}"] == pytest.approx(brute_force_recall(similarity.T, is_own.T, k))
            zero_shot = zero_shot_metrics(similarity, owners, torch.eye(4), topk=(k,))
            assert zero_shot[f"top{k}"] == pytest.approx(brute_force_recall(similarity, is_own, k))


def test_retrieval_and_zero_shot_with_exact_ties_against_enumeration():
    # Texts 0 and 5 are the same vector (the same string), owned by images 0 and 1: for image 0 the two are a coin
    # flip at R@1, and for text 5 image 0 scores above its own image 1.
    features = F.normalize(torch.randn(5, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    texts, owners = torch.cat([features, features]), torch.cat([torch.arange(5), torch.arange(5)])
    owners[5] = 1
    metrics = retrieval_metrics(features, texts, owners, ks=(1,))
    assert metrics["text_to_image_R@1"] == pytest.approx(0.9)
    assert metrics["image_to_text_R@1"] == pytest.approx((4 + 0.5) / 5)
    assert retrieval_metrics(features, features, torch.arange(5))["mean_recall"] == 1.0
    # Zero-shot: images equal to their class embeddings are all right; swapping two labels makes 2 of 5 wrong.
    assert zero_shot_metrics(features, torch.arange(5), features) == {"top1": 1.0, "top5": 1.0}
    assert zero_shot_metrics(features, torch.tensor([1, 0, 2, 3, 4]), features)["top1"] == pytest.approx(0.6)


def test_a_model_that_embeds_everything_alike_scores_chance():
    same = F.normalize(torch.ones(10, 4), dim=-1)
    metrics = retrieval_metrics(same, same, torch.arange(10), ks=(1, 5))
    assert metrics["text_to_image_R@1"] == pytest.approx(0.1) and metrics["image_to_text_R@5"] == pytest.approx(0.5)
    assert zero_shot_metrics(same, torch.arange(10) % 4, same[:4], topk=(1,))["top1"] == pytest.approx(0.25)


def near_tied_features(n: int = 40, dim: int = 16, seed: int = 0) -> torch.Tensor:
    """Embeddings of a nearly collapsed model, with exact duplicates (rows 2i and 2i+1), as a tiny trained model
    gives: every similarity lies within ~1e-2 of every other."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(n // 2, dim, generator=generator) * 0.02 + 1
    return F.normalize(base.repeat_interleave(2, dim=0), dim=-1)


def test_metrics_do_not_move_under_float_rounding_noise():
    # The same embeddings computed at another batch size or on another CPU differ by float rounding (~1e-7 per
    # element): the metrics must not change. With a strict comparison, the duplicates' exact ties (and near-ties) are
    # reordered by such noise.
    images = near_tied_features()
    texts = near_tied_features(seed=1)
    owners = torch.arange(len(texts))
    labels = torch.arange(len(images)) % 4
    generator = torch.Generator().manual_seed(2)
    reference = retrieval_metrics(images, texts, owners), zero_shot_metrics(images, labels, texts[:4], topk=(1, 2))
    for _ in range(5):
        noisy_images = F.normalize(images + torch.randn(images.shape, generator=generator) * 1e-7, dim=-1)
        noisy_texts = F.normalize(texts + torch.randn(texts.shape, generator=generator) * 1e-7, dim=-1)
        assert retrieval_metrics(noisy_images, noisy_texts, owners) == reference[0]
        assert zero_shot_metrics(noisy_images, labels, noisy_texts[:4], topk=(1, 2)) == reference[1]
    assert (noisy_images @ noisy_texts.T - images @ texts.T).abs().max() < 1e-6  # the tolerance is 1e-4


@pytest.fixture(scope="module")
def tiny_eval():
    """A random tiny model (near-collapsed embeddings) and 12 images, half of them repeated, with duplicate captions."""
    torch.manual_seed(0)
    model = MobileCLIPModel(tiny_config()).eval()
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (40, 52, 3), dtype=np.uint8) for _ in range(6)]
    images = [pixels[i % 6] for i in range(12)]
    names = ["red thing", "green thing", "blue thing"]
    data = Dataset.from_dict(
        {"image": images, "label": [i % 3 for i in range(12)],
         "caption": [[f"a photo of a {names[i % 3]}", f"object {i % 4}"] for i in range(12)]},
        features=Features({"image": Image(), "label": ClassLabel(names=names), "caption": List(Value("string"))}),
    )
    processor = MobileCLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    return model, MobileCLIPTokenizer(model_max_length=16), processor, data, names


def test_metrics_do_not_depend_on_the_evaluation_batch_size(tiny_eval):
    model, tokenizer, processor, data, names = tiny_eval
    texts = [c for captions in data["caption"] for c in captions]
    owners = torch.arange(len(data)).repeat_interleave(2)
    results = []
    for batch_size in (1, 5, 12):
        loader = image_dataloader(data, processor, batch_size, label_column="label")
        results.append((evaluate_zero_shot(model, tokenizer, loader, names, templates=["a {}.", "the {}."]),
                        evaluate_retrieval(model, tokenizer, loader, texts, owners)))
    assert results[0] == results[1] == results[2]
    # The repeated images and captions are exact ties, broken at random: image->text R@1 is below 1 but above 0.
    assert 0 < results[0][1]["image_to_text_R@1"] < 1


def test_load_model_refuses_a_folder_without_weights(tmp_path):
    tiny_config().save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="has no weights.*--random-init"):
        load_model(str(tmp_path))
    with pytest.raises(ValueError, match="is a variant name.*--random-init"):
        load_model("mobileclip-s0")
    assert isinstance(load_model(str(tmp_path), random_init=True), MobileCLIPModel)
    with pytest.raises(FileNotFoundError, match="has no weights"):
        evaluate_main(["--model", str(tmp_path), "--dataset", str(tmp_path / "missing")])


def test_rank_recall_metric_rejects_bad_input():
    metric = evaluate.load(RANK_RECALL, "retrieval")
    with pytest.raises(ValueError, match="references must index the 3 candidates"):
        metric.compute(predictions=np.zeros((2, 3)), references=[0, 3])
    with pytest.raises(ValueError, match="Unknown configuration 'zero-shot'"):
        evaluate.load(RANK_RECALL, "zero-shot")


def test_class_retrieval_finds_any_candidate_of_the_class_against_enumeration():
    generator = torch.Generator().manual_seed(3)
    for _ in range(10):
        similarity = torch.randint(0, 3, (6, 5), generator=generator).float() / 4  # (queries, candidates)
        query_labels = torch.randint(0, 2, (6,), generator=generator)
        candidate_labels = torch.tensor([0, 1, 0, 1, 1])
        is_own = query_labels[:, None] == candidate_labels[None, :]
        metrics = class_retrieval_metrics(similarity, torch.eye(5), query_labels, candidate_labels, ks=(1, 2))
        for k in (1, 2):
            assert metrics[f"R@{k}"] == pytest.approx(brute_force_recall(similarity, is_own, k))
    with pytest.raises(ValueError, match="at least one candidate"):
        class_retrieval_metrics(torch.eye(2), torch.eye(2), torch.tensor([0, 2]), torch.tensor([0, 1]))


def test_load_model_names_what_is_wrong_and_prefers_a_folder_to_a_variant(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no config.json"):
        load_model(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    MobileCLIPModel(tiny_config()).save_pretrained(tmp_path / "mobileclip-s0")
    model = load_model("mobileclip-s0")  # the saved folder of that name, not the variant's random initialisation
    assert model.config.text_config.max_position_embeddings == 16
