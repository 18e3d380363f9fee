"""MobileCLIPTokenizer: ids identical to open_clip's tokenizer, transformers' padding conventions, save/load, errors."""

import json
import random
import unicodedata

import pytest
import torch

open_clip = pytest.importorskip("open_clip")  # test-only reference; the library never imports it

from modeling_mobileclip.tokenization_mobileclip import (  # noqa: E402
    BPE_FILE,
    MobileCLIPTokenizer,
    bytes_to_unicode,
)

CONTEXT, SOT, EOT = 77, 49406, 49407
OPEN_CLIP_CALL = {"padding": "max_length", "truncation": True}  # MobileCLIPProcessor's default text kwargs

# Each line exercises one pitfall of reproducing open_clip's tokenizer: cleaning (ftfy, HTML), "!" as the pad token,
# literal special tokens, unicode normalisation, whitespace, and truncation at exactly / just over 77 tokens.
HAND_PICKED = [
    "a photo of a cat",
    "A Photo Of A CAT",
    "",
    "   ",
    " \t\n\r ",
    "tabs\tand\nnew  lines\r\n here ",
    "don't you'll we've they'd I'm it's",
    "3.14159 is about 22/7; 1,000,000 + 42 = ?",
    "café naïve résumé Ångström",
    unicodedata.normalize("NFD", "café naïve résumé Ångström"),
    "猫が好きです 我喜欢猫 고양이를 좋아해요",
    "🐱😀👍🏽❤️🇫🇷 emoji",
    "Ελληνικά кириллица العربية עברית हिन्दी ไทย",
    "ﬁne ﬂower ﬀ",
    "ＡＢＣ１２３ full-width",
    "“curly” ‘quotes’ and … ellipsis – dash — em",
    "fish &amp; chips &lt;b&gt; &#39;x&#39; &amp;amp; &quot;q&quot; &#x263A;",
    "cafÃ© mojibake Ã©tÃ©",
    "ǅ ǈ ǋ ĳ",
    "nbsp\u00a0em\u2003space\u3000ideographic",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "control\x1cchars\x1dhere\x85next",
    "!!",
    "!",
    "hello!? wow!!! ?!",
    "<|endoftext|>",
    "<|startoftext|> hi <|endoftext|> there",
    "İstanbul straße ẞ",
    "ΟΔΟΣ ΣΑΣ. Σ",  # str.lower() gives a final "ς"; the Rust Lowercase normalizer would give "σ"
    "<b>cafe&#769;</b>",  # ftfy skips HTML-looking text; html.unescape then leaves a decomposed é (no NFC)
    " ".join(f"word{i}" for i in range(500)),
    "x" * 500,
    "a " * 76,
    "a " * 75,
    "a " * 74,
    "supercalifragilisticexpialidocious " * 5,
    "https://example.com/path?q=1&b=2 #hashtag @user",
]


def _random_texts(n: int, seed: int = 0) -> list[str]:
    alphabet = (
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,!?'\"-_&;#<>|/\\()[]{}\t\n"
        "éèàüöäñçßøåÉÜ猫犬日本語中文한국어😀🐱👍🏽❤️ﬁﬂＡＢＣ１２“”‘’…–—\u00a0\u2003\u200b\u0301\u0308αβγΣΑΟдияשלוםمرحبا"
    )
    rng = random.Random(seed)
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120))) for _ in range(n)]
    # Entity-like strings: the cases that need open_clip's double html.unescape.
    entity_chars = "&#x;amp0123769lgtquo<>/ abeΣ"
    texts += ["".join(rng.choice(entity_chars) for _ in range(rng.randint(0, 40))) for _ in range(n // 4)]
    return texts


@pytest.fixture(scope="module")
def tokenizer():
    return MobileCLIPTokenizer()


@pytest.fixture(scope="module")
def reference():
    return open_clip.get_tokenizer("ViT-B-16")


def _assert_same_ids(tokenizer, reference, texts):
    ids = tokenizer(texts, return_tensors="pt", **OPEN_CLIP_CALL)["input_ids"]
    expected = reference(texts)
    mismatches = [repr(t[:60]) for t, a, b in zip(texts, ids, expected, strict=True) if not torch.equal(a, b)]
    assert not mismatches, f"{len(mismatches)} strings differ from open_clip: {mismatches[:5]}"


def test_ids_match_open_clip_hand_picked(tokenizer, reference):
    _assert_same_ids(tokenizer, reference, HAND_PICKED)


def test_ids_match_open_clip_random(tokenizer, reference):
    _assert_same_ids(tokenizer, reference, _random_texts(400))


def test_ids_match_open_clip_one_by_one(tokenizer, reference):
    for text in HAND_PICKED[:10]:
        assert tokenizer(text, **OPEN_CLIP_CALL)["input_ids"] == reference(text)[0].tolist()


def test_vocab_and_specials(tokenizer):
    assert len(tokenizer) == tokenizer.vocab_size == 49408
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (SOT, EOT, 0)
    assert tokenizer.model_max_length == CONTEXT
    assert bytes_to_unicode() == open_clip.tokenizer.bytes_to_unicode()
    assert tokenizer.get_vocab() == MobileCLIPTokenizer.from_bpe(BPE_FILE).get_vocab()


def test_max_length_call_pads_to_77_with_mask(tokenizer):
    out = tokenizer(["a cat", "a dog on a mat"], **OPEN_CLIP_CALL)
    assert [len(ids) for ids in out["input_ids"]] == [CONTEXT, CONTEXT]
    assert out["input_ids"][0][:5] == [SOT, 320, 2368, EOT, 0]
    assert out["attention_mask"][0] == [1] * 4 + [0] * (CONTEXT - 4)


def test_default_call_neither_pads_nor_truncates(tokenizer):
    """transformers' defaults, as CLIPTokenizer's."""
    out = tokenizer(["a cat", "a dog on a mat"])
    assert out["input_ids"] == [[SOT, 320, 2368, EOT], [SOT, 320, 1929, 525, 320, 9063, EOT]]
    assert len(tokenizer(" ".join(["cat"] * 100))["input_ids"]) == 102


@pytest.mark.parametrize("padding", [True, "longest"])
def test_padding_longest_pads_to_the_longest_with_id_0(tokenizer, padding):
    out = tokenizer(["a cat", "a dog on a mat"], padding=padding, return_tensors="pt")
    assert out["input_ids"].tolist()[0] == [SOT, 320, 2368, EOT, 0, 0, 0]
    assert out["attention_mask"].tolist()[0] == [1, 1, 1, 1, 0, 0, 0]


def test_pad_pads_to_the_longest(tokenizer):
    features = [tokenizer("a cat"), tokenizer("a big dog")]
    assert tokenizer.pad(features, return_tensors="pt")["input_ids"].shape == (2, 5)
    assert tokenizer.pad(features, padding="max_length", return_tensors="pt")["input_ids"].shape == (2, CONTEXT)


def test_pad_to_multiple_of(tokenizer):
    assert tokenizer(["a cat"], padding=True, pad_to_multiple_of=8)["input_ids"] == [[SOT, 320, 2368, EOT] + [0] * 4]


def test_inputs_over_77_tokens_batch_with_padding_true(tokenizer):
    out = tokenizer([" ".join(["cat"] * 100), "a cat"], padding=True, return_tensors="pt")
    assert out["input_ids"].shape == (2, 102)
    truncated = tokenizer([" ".join(["cat"] * 100), "a cat"], padding=True, truncation=True, return_tensors="pt")
    assert truncated["input_ids"].shape == (2, CONTEXT) and truncated["input_ids"][0, -1] == EOT


def test_padding_false_returns_unpadded_ids(tokenizer):
    out = tokenizer(["a cat", "a dog on a mat"], padding=False)
    assert out["input_ids"] == [[SOT, 320, 2368, EOT], [SOT, 320, 1929, 525, 320, 9063, EOT]]


def test_truncation_keeps_eot(tokenizer, reference):
    text = " ".join(["cat"] * 200)
    for padding in ("max_length", False):
        ids = tokenizer(text, padding=padding, truncation=True)["input_ids"]
        assert len(ids) == CONTEXT and ids[0] == SOT and ids[-1] == EOT
        assert ids == reference(text)[0].tolist()


def test_cleaning_applies_to_encode_and_tokenize(tokenizer):
    assert tokenizer.encode("ﬁne &amp; CAT") == [SOT, 3797, 261, 2368, EOT]
    assert tokenizer.tokenize("ﬁne &amp; CAT") == ["fine</w>", "&</w>", "cat</w>"]
    ids = tokenizer("A photo of a Cat!", **OPEN_CLIP_CALL)["input_ids"]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a photo of a cat !"


def test_open_clip_internal_special_names_are_text(tokenizer):
    # Documented divergence: open_clip maps the literal text "<end_of_text>" to EOT; here it is ordinary text.
    ids = tokenizer("<end_of_text> <start_of_text>", padding=False)["input_ids"]
    assert ids[0] == SOT and ids[-1] == EOT and SOT not in ids[1:-1] and EOT not in ids[1:-1]


def test_save_load_round_trip(tokenizer, tmp_path):
    texts = HAND_PICKED + _random_texts(50, seed=1)
    # The call sets padding/truncation on the backend.
    before = tokenizer(texts, return_tensors="pt", **OPEN_CLIP_CALL)["input_ids"]
    tokenizer.save_pretrained(tmp_path)

    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    assert saved["padding"] is None and saved["truncation"] is None
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "MobileCLIPTokenizer"
    assert config["pad_token"] == "!" and config["split_special_tokens"] is True and config["model_max_length"] == 77
    assert not {"max_length", "stride", "truncation_strategy", "pad_to_multiple_of", "padding_side"} & config.keys()

    reloaded = MobileCLIPTokenizer.from_pretrained(tmp_path)
    assert torch.equal(reloaded(texts, return_tensors="pt", **OPEN_CLIP_CALL)["input_ids"], before)
    assert reloaded(["a cat"], padding=False)["input_ids"] == [[SOT, 320, 2368, EOT]]

    reloaded.save_pretrained(tmp_path / "again")  # a second generation must not accumulate state either
    config_again = json.loads((tmp_path / "again" / "tokenizer_config.json").read_text())
    assert not {"max_length", "stride", "truncation_strategy"} & config_again.keys()


def test_empty_list_raises(tokenizer):
    with pytest.raises(ValueError, match="empty"):
        tokenizer([])
    with pytest.raises(ValueError, match="empty"):
        tokenizer.encode([])


@pytest.mark.parametrize(
    ("text", "type_name"), [(["a cat", 3], "int"), (["a cat", None], "NoneType"), (3.5, "float"), ([b"cat"], "bytes")]
)
def test_non_string_raises(tokenizer, text, type_name):
    with pytest.raises(TypeError, match=f"type {type_name}"):
        tokenizer(text)


def _with_added_tokens():
    from tokenizers import AddedToken

    tokenizer = MobileCLIPTokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<X>"]})
    tokenizer.add_tokens(AddedToken("<obj>", special=True))
    tokenizer.add_tokens(["zebracorn"])
    return tokenizer


def _check_added_tokens(tokenizer, reference):
    x, obj, word = (tokenizer.convert_tokens_to_ids(t) for t in ("<X>", "<obj>", "zebracorn"))
    assert (x, obj, word) == (49408, 49409, 49410)
    # Added tokens (special or not) are matched whole, unlowered, wherever they stand, as slow tokenizers match them.
    assert tokenizer.tokenize("a <X> photo<obj>of zebracorn") == ["a</w>", "<X>", "photo</w>", "<obj>", "of</w>",
                                                                   "zebracorn"]
    ids = tokenizer("A<X>cat", padding=False)["input_ids"]
    assert ids == [SOT, 320, x, 2368, EOT]
    # The text around them is cleaned and tokenised as open_clip does, built-in specials included.
    text = "A Photo! of <|endoftext|> &amp; ﬁne CAT"
    expected = reference(text)[0].tolist()
    expected = expected[: expected.index(EOT) + 1]
    assert tokenizer(text + " <X>", padding=False)["input_ids"] == expected[:-1] + [x, EOT]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "a cat"
    assert tokenizer.convert_ids_to_tokens(ids, skip_special_tokens=True) == ["a</w>", "cat</w>"]
    assert "zebracorn" in tokenizer.decode(tokenizer("zebracorn")["input_ids"], skip_special_tokens=True)
    decoder = tokenizer.added_tokens_decoder
    assert decoder[x].special and decoder[obj].special and not decoder[word].special


def test_added_tokens_are_matched_whole(reference):
    _check_added_tokens(_with_added_tokens(), reference)


def test_added_tokens_survive_save_load(tmp_path, reference):
    from transformers import AutoTokenizer

    _with_added_tokens().save_pretrained(tmp_path)
    saved = {t["content"]: t["special"] for t in json.loads((tmp_path / "tokenizer.json").read_text())["added_tokens"]}
    assert saved["<X>"] and saved["<obj>"] and not saved["zebracorn"]  # the file alone has the right flags
    _check_added_tokens(MobileCLIPTokenizer.from_pretrained(tmp_path), reference)
    _check_added_tokens(AutoTokenizer.from_pretrained(tmp_path), reference)
