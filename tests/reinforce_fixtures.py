"""Tiny teachers, a tiny captioner and a small messy image-text dataset for the dataset_builder tests (offline)."""

import io

import datasets
import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    CLIPConfig,
    CLIPModel,
    GPT2Config,
    PreTrainedTokenizerFast,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
    ViTImageProcessor,
)

from dataset_builder.captioner import TransformersCaptioner
from dataset_builder.teachers import TransformersTeacher
from modeling_mobileclip.modeling_mobileclip import MobileCLIPModel

from conftest import randomize_, tiny_config

WORDS = ["[PAD]", "[BOS]", "[EOS]", "a", "photo", "of", "cat", "dog", "on", "the", "red", "table", "."]


def char_tokenizer(vocab_size: int, context_length: int = 16):
    """Characters -> ids with SOT = vocab - 2 and EOT = vocab - 1 (the largest id, for argmax pooling), zero pad."""

    def tokenize(texts):
        ids = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens = [1 + ord(c) % (vocab_size - 3) for c in text][: context_length - 2]
            tokens = [vocab_size - 2, *tokens, vocab_size - 1]
            ids[row, : len(tokens)] = torch.tensor(tokens)
        return ids

    return tokenize


def tiny_teachers():
    """Two teachers of different widths (24 and 16) and resolutions (32 and 48)."""
    torch.manual_seed(0)
    mobileclip = randomize_(MobileCLIPModel(tiny_config()))
    clip = CLIPModel(CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, eos_token_id=98),
        vision_config=dict(image_size=48, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2),
        projection_dim=16)).eval()
    return [
        TransformersTeacher(mobileclip, char_tokenizer(49408), "tiny-mobileclip", image_size=32, mean=(0, 0, 0),
                            std=(1, 1, 1), interpolation="bilinear"),
        TransformersTeacher(clip, char_tokenizer(99), "tiny-clip", image_size=48),
    ]


def tiny_captioner():
    """A randomly initialised ViT + GPT-2 vision-encoder-decoder with a 13-word tokenizer."""
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[PAD]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", bos_token="[BOS]",
                                        eos_token="[EOS]")
    torch.manual_seed(0)
    encoder = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32)
    decoder = GPT2Config(vocab_size=len(WORDS), n_embd=16, n_layer=1, n_head=2, n_positions=32,
                         add_cross_attention=True, is_decoder=True, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = 1, 0, 2
    model = VisionEncoderDecoderModel(config)
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    return TransformersCaptioner(model, processor, tokenizer, name="tiny-ved", max_new_tokens=5)


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def _noise(width: int, height: int, seed: int, mode: str = "RGB") -> Image.Image:
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4, "L": 1}[mode]
    array = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    return Image.fromarray(array.squeeze(-1) if channels == 1 else array, mode)


def messy_rows():
    """14 rows: 9 good (incl. grayscale, RGBA, CMYK, 3x3, a GIF, list caption) and 5 bad, with their expected fate."""
    good_jpeg = _encode(_noise(48, 40, 1), "JPEG")
    rows = [
        ("u00", good_jpeg, "a red cat"),
        ("u01", _encode(_noise(30, 50, 2), "PNG"), "  a dog\non the table "),
        ("u02", b"definitely not an image", "corrupt bytes"),  # undecodable_image
        ("u03", _encode(_noise(40, 40, 3, "L"), "PNG"), "grayscale"),
        ("u04", _encode(_noise(36, 44, 4, "RGBA"), "PNG"), "rgba"),
        ("u05", _encode(_noise(40, 30, 5, "CMYK"), "JPEG"), "cmyk"),
        ("u06", _encode(_noise(1, 1, 6), "PNG"), "one pixel"),  # too_small
        ("u07", _encode(_noise(3, 3, 7), "PNG"), "three pixels"),
        ("u08", good_jpeg[: len(good_jpeg) // 2], "truncated"),  # undecodable_image
        ("u09", _encode(_noise(33, 35, 9), "JPEG"), "   "),  # empty_caption
        ("u10", _encode(_noise(50, 20, 10), "GIF"), "a gif"),
        ("u11", _encode(_noise(24, 24, 11), "JPEG"), None),  # missing_caption
        ("u12", _encode(_noise(64, 48, 12), "JPEG"), "the photo of a table"),
        ("u13", _encode(_noise(20, 28, 13), "PNG"), "last one"),
    ]
    return rows


def load_local(path, **kwargs):
    """``load_dataset`` of a freshly built folder. datasets caches local folders by folder name and card, not by
    file contents, so a rebuild into a same-named folder (pytest's tmp_path numbering) would read stale rows."""
    if not kwargs.get("streaming"):
        kwargs["download_mode"] = "force_redownload"
    return datasets.load_dataset(str(path), split="train", **kwargs)


EXPECTED_SKIPS = {"undecodable_image": 2, "too_small": 1, "empty_caption": 1, "missing_caption": 1}


def messy_dataset(with_syn: bool = False) -> datasets.Dataset:
    rows = messy_rows()
    data = {"uid": [r[0] for r in rows], "image": [{"bytes": r[1], "path": None} for r in rows],
            "caption": [r[2] for r in rows]}
    features = {"uid": datasets.Value("string"), "image": datasets.Image(), "caption": datasets.Value("string")}
    if with_syn:
        data["syn"] = [[f"syn {i} {j}" for j in range(3)] for i in range(len(rows))]
        features["syn"] = datasets.List(datasets.Value("string"))
    return datasets.Dataset.from_dict(data, features=datasets.Features(features))


__all__ = [
    "EXPECTED_SKIPS",
    "char_tokenizer",
    "load_local",
    "messy_dataset",
    "messy_rows",
    "tiny_captioner",
    "tiny_teachers",
]
