"""Synthetic-caption sampling: exact per-row top-p sampling, batch independence, and open_clip CoCa (tiny, random)."""

import numpy as np
import pytest
import torch
from PIL import Image

from dataset_builder.captioner import RowSampler

from reinforce_fixtures import tiny_captioner


def images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)) for _ in range(n)]


def test_row_sampler_draws_from_the_softmax():
    # Gumbel-max: argmax(scores + Gumbel noise) is a draw from softmax(scores); -inf (top-p filtered) never wins.
    scores = torch.tensor([0.0, 1.0, 2.0, -float("inf")]).expand(40_000, 4)
    draws = RowSampler(range(40_000))(None, scores).argmax(-1)
    frequencies = torch.bincount(draws, minlength=4).float() / len(draws)
    torch.testing.assert_close(frequencies, torch.tensor([0.0900, 0.2447, 0.6652, 0.0]), atol=0.01, rtol=0)
    # A row's draws depend on its own seed only.
    again = RowSampler([5, 39_999])(None, scores[:2]).argmax(-1)
    assert again.tolist() == [draws[5].item(), draws[39_999].item()]


def test_transformers_captioner_is_batched_and_batch_independent():
    captioner = tiny_captioner()
    a, b, c = images(3)
    together = captioner.caption([a, b, c], 4, seeds=[11, 22, 33])
    assert [len(x) for x in together] == [4, 4, 4]
    assert captioner.caption([c, a], 4, seeds=[33, 11]) == [together[2], together[0]]
    assert captioner.caption([a], 4, seeds=[12]) != [together[0]]  # another seed, other captions


def register_tiny_coca(name: str, heads: int, layers: int) -> None:
    """A tiny CoCa config in open_clip's registry (width 32, 32-px images), text towers of ``heads`` x ``layers``."""
    open_clip = pytest.importorskip("open_clip")
    tower = dict(width=32, heads=heads, layers=layers)
    open_clip.factory._MODEL_CONFIGS[name] = dict(
        embed_dim=32, custom_text=True,
        vision_cfg=dict(image_size=32, patch_size=16, width=32, layers=1, head_width=16, attentional_pool=True,
                        attn_pooler_heads=2, output_tokens=True),
        text_cfg=dict(context_length=76, vocab_size=49408, embed_cls=True, output_tokens=True, **tower),
        multimodal_cfg=dict(context_length=76, vocab_size=49408, attn_pooler_heads=2, **tower),
    )


@pytest.fixture(scope="module")
def tiny_coca():
    register_tiny_coca("coca_tiny_test", heads=2, layers=1)
    from dataset_builder.captioner import CoCaCaptioner

    torch.manual_seed(0)
    captioner = CoCaCaptioner("coca_tiny_test", pretrained=None, seq_len=12)
    # Random weights: open_clip leaves the decoder's projection as torch.empty (never initialised), whatever it holds.
    projection = captioner.model.text_decoder.text_projection
    with torch.no_grad():
        torch.nn.init.normal_(projection, std=projection.shape[0] ** -0.5)
    return captioner


def test_coca_captions_are_batched_and_batch_independent(tiny_coca):
    a, b, c = images(3)
    together = tiny_coca.caption([a, b, c], 3, seeds=[1, 2, 3])
    assert [len(x) for x in together] == [3, 3, 3] and all(isinstance(t, str) for x in together for t in x)
    assert tiny_coca.caption([c, a], 3, seeds=[3, 1]) == [together[2], together[0]]


def test_coca_sampling_matches_open_clip_generate(tiny_coca, monkeypatch):
    # With a vanishing top-p both samplers are greedy, so our per-row loop must give open_clip's generate() token for
    # token: same minimum length, end-of-text forced at seq_len, padding after it. open_clip 3.3 disables generate()
    # under transformers 5 (it imports the removed BeamSearchScorer); hand it the classes top-p sampling uses.
    import transformers
    from open_clip import coca_model

    for name in ("LogitsProcessorList", "TopPLogitsWarper", "TopKLogitsWarper", "RepetitionPenaltyLogitsProcessor",
                 "MinLengthLogitsProcessor", "MaxLengthCriteria", "StoppingCriteriaList"):
        monkeypatch.setattr(coca_model, name, getattr(transformers, name), raising=False)
    monkeypatch.setattr(coca_model, "_has_transformers", True)
    monkeypatch.setitem(coca_model.GENERATION_TYPES, "top_p", transformers.TopPLogitsWarper)
    pixels = torch.stack([tiny_coca.preprocess(image) for image in images(3)])
    expected = tiny_coca.model.generate(pixels, generation_type="top_p", top_p=1e-9, fixed_output_length=True,
                                        seq_len=tiny_coca.seq_len)
    monkeypatch.setattr(tiny_coca, "top_p", 1e-9)
    assert torch.equal(tiny_coca.sample(pixels, seeds=[0, 1, 2]), expected)


@pytest.mark.parametrize("correct_cls_mask", [False, True])
def test_coca_kv_cache_gives_the_full_forward_logits(correct_cls_mask):
    """Teacher-forced over 14 positions, the cached decoder's logits equal CoCa's forward on the whole prefix, also
    where a padding id (0, "!" in CLIP's vocabulary, which CoCa can sample) is in the prefix and masks keys."""
    register_tiny_coca("coca_tiny_kv_test", heads=4, layers=2)
    import open_clip

    from dataset_builder.captioner import CoCaKVDecoder

    torch.manual_seed(0)
    model = open_clip.create_model("coca_tiny_kv_test", pretrained=None).eval()
    model.text.correct_cls_mask = correct_cls_mask  # not a config key in open_clip 3.3; read at every forward
    assert CoCaKVDecoder.supports(model)
    with torch.no_grad():
        torch.nn.init.normal_(model.text_decoder.text_projection, std=32**-0.5)
        torch.nn.init.normal_(model.text.cls_emb, std=1.0)  # a CLS a mistaken mask would let tokens see
        pixels = torch.randn(3, 3, 32, 32)
        tokens = torch.randint(1, 49406, (3, 14))
        tokens[:, 0] = 49406
        tokens[0, 3] = tokens[0, 7] = tokens[1, 9] = 0  # padding ids inside the prefix
        tokens[2, 5:] = 0  # a finished row: padding to the end
        image = model(pixels)
        decoder = CoCaKVDecoder(model, image["image_embs"])
        for t in range(tokens.shape[1]):
            cached = decoder.step(tokens[:, t])
            full = model(pixels, tokens[:, :t + 1], image_latent=image["image_features"],
                         image_embs=image["image_embs"], output_labels=False)["logits"][:, -1]
            torch.testing.assert_close(cached, full, rtol=1e-5, atol=1e-5, msg=f"position {t}")
        # The padding mask matters here: the same prefixes with the padding ids replaced give other logits.
        other = model(pixels, tokens.masked_fill(tokens == 0, 1), image_latent=image["image_features"],
                      image_embs=image["image_embs"], output_labels=False)["logits"][:, -1]
        assert (other - cached).abs().max() > 1e-3


def test_coca_kv_cache_samples_the_same_captions(tiny_coca):
    pixels = torch.stack([tiny_coca.preprocess(image) for image in images(2)])
    seeds = list(range(6))
    cached = tiny_coca.sample(pixels, seeds, rows_per_image=3)
    assert cached.shape == (6, tiny_coca.seq_len)
    assert torch.equal(cached, tiny_coca.sample(pixels, seeds, rows_per_image=3, kv_cache=False))
    # Each image is encoded once for its rows: the same rows as repeating the pixels.
    assert torch.equal(cached, tiny_coca.sample(pixels.repeat_interleave(3, dim=0), seeds))
