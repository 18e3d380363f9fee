"""Per-sample preparation for the builder: decode and validate an input row, sample its augmentations, replay them.

Runs in DataLoader worker processes, so it holds no model: ``prepare_sample`` gets only the teacher views
(resolution, interpolation) it must replay. Bad input never raises: the result is then a ``Skipped`` with a reason
(one of ``SKIP_REASONS``), which the builder counts in ``report.json``. A good row becomes a ``PreparedSample``,
which the teachers (and the captioner) turn into a ``schema.Record`` (``PreparedSample.to_record``).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from modeling_mobileclip.image_processing_mobileclip import SIXTEEN_BIT_MODES

from .augment import MAGNITUDE, RRC_SCALE, compress, sample_augmentations, seed_for_key
from .schema import Record, decode_image, image_format
from .teachers import replay_views

SKIP_REASONS = (
    "undecodable_image",  # no bytes/path, unreadable, truncated or not an image
    "too_small",  # a side shorter than min_image_size (default 2 px)
    "missing_caption",  # None / absent
    "empty_caption",  # only whitespace
    "bad_syn_captions",  # --captioner none and the synthetic-caption column is missing or too short
    "duplicate_key",  # key already seen in the same shard
    "preprocess_error",  # anything else raised while preparing the sample (logged with the message)
)
# The stored image keeps its source bytes only in these formats; anything else is re-encoded losslessly as PNG.
KEPT_FORMATS = ("JPEG", "PNG")


@dataclass(frozen=True, kw_only=True)
class PrepConfig:
    """What a worker needs to prepare samples (picklable, no models).

    Attributes:
        image_column, caption_column, key_column, url_column, syn_captions_column: Input column names (the last
            three optional: the row index is the key, ``"{source}#{row index}"`` the image reference, and no
            synthetic captions are read).
        views: ``(resolution, interpolation)`` pairs the augmentations are replayed at (``TeacherEnsemble.views``).
        num_augmentations: K augmentations sampled per image.
        seed: Global seed of the augmentations.
        aug_resolution, crop_scale, rand_augment_magnitude: How the augmentations are sampled.
        num_synthetic_captions: N synthetic captions read from ``syn_captions_column``.
        min_image_size: Images with a side shorter than this are skipped.
        keep_pil: Keep the decoded image in the sample (the captioner needs it in the main process).
        source: Name of the input, for the image reference.
    """

    image_column: str
    caption_column: str
    views: Sequence[tuple[int, str]]
    num_augmentations: int
    seed: int
    aug_resolution: int = 224
    crop_scale: Sequence[float] = RRC_SCALE
    rand_augment_magnitude: int = MAGNITUDE
    key_column: str | None = None
    url_column: str | None = None
    syn_captions_column: str | None = None
    num_synthetic_captions: int = 0
    min_image_size: int = 2
    keep_pil: bool = False
    source: str = ""


@dataclass(frozen=True)
class Skipped:
    """An input row left out: its key, the reason (one of ``SKIP_REASONS``) and a detail for the report."""

    key: str
    reason: str
    detail: str = ""


@dataclass
class PreparedSample:
    """A good input row, decoded and augmented, before the teachers run.

    Attributes:
        key: Sample key.
        caption: The cleaned real caption.
        syn_captions: The synthetic captions read from the input, or None (a captioner makes them).
        aug_params: The K compressed augmentations.
        views: ``{(resolution, interpolation): uint8 (K, 3, S, S)}``, the augmentations replayed per teacher view.
        image_bytes: The bytes to store (see ``stored_image_bytes``).
        image_ref: The image's URL column or ``"{source}#{row index}"``.
        image: The RGB image (with ``keep_pil`` only, for the captioner).
    """

    key: str
    caption: str
    syn_captions: list[str] | None
    aug_params: list
    views: dict[tuple[int, str], torch.Tensor]
    image_bytes: bytes
    image_ref: str
    image: Image.Image | None = None

    def to_record(self, syn_captions: list[str], image_emb: np.ndarray, text_emb: np.ndarray) -> Record:
        """The dataset row of this sample with its synthetic captions and teacher embeddings."""
        return Record(key=self.key, caption=self.caption, syn_captions=list(syn_captions),
                      aug_params=self.aug_params, image_emb=image_emb, text_emb=text_emb,
                      image_bytes=self.image_bytes, image_ref=self.image_ref)


def clean_caption_value(value: Any) -> tuple[str | None, str | None]:
    """Normalise a caption cell to one whitespace-collapsed string; return ``(caption, skip_reason)``.

    bytes are decoded as UTF-8, a list (e.g. COCO's 5 captions) gives its first non-empty string, numbers become
    strings.
    """
    if isinstance(value, (list, tuple)):
        value = next((v for v in value if isinstance(v, (str, bytes)) and str(v).strip()), None if not value else "")
    if value is None:
        return None, "missing_caption"
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    text = " ".join(str(value).split())
    return (text, None) if text else (None, "empty_caption")


def image_bytes(value: Any) -> bytes | None:
    """Raw encoded bytes of an image cell: ``{"bytes", "path"}`` (``Image(decode=False)``), bytes, a path, or PIL."""
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        value = value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str) and value:
        with open(value, "rb") as f:
            return f.read()
    if isinstance(value, Image.Image):
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue()
    return None


def stored_image_bytes(data: bytes, rgb: Image.Image) -> bytes:
    """The bytes to store for an image decoded to ``rgb`` (``schema.decode_image``): the source bytes for 8-bit
    JPEG/PNG, else a lossless PNG of ``rgb`` (also for 16-bit PNGs, which any reader's ``convert("RGB")`` would
    clip)."""
    fmt, mode = image_format(data)
    if fmt in KEPT_FORMATS and mode not in SIXTEEN_BIT_MODES:
        return data
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return buf.getvalue()


def _syn_captions(row: dict, cfg: PrepConfig) -> tuple[list[str] | None, str | None]:
    if cfg.syn_captions_column is None:
        return None, None
    value = row.get(cfg.syn_captions_column)
    if isinstance(value, str):  # a JSON list, or DataCompDR's syn.json {"syn_text": [...]}
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            value = [value]
    if isinstance(value, dict):
        value = value.get("syn_text")
    texts = [c for c in (clean_caption_value(v)[0] for v in value or []) if c]
    if len(texts) < cfg.num_synthetic_captions:
        return None, "bad_syn_captions"
    return texts[: cfg.num_synthetic_captions], None


def prepare_sample(row: dict, index: int | str, cfg: PrepConfig) -> PreparedSample | Skipped:
    """Turn one input row (number or name ``index`` in the input) into a prepared sample, or a ``Skipped``."""
    key = str(row[cfg.key_column]) if cfg.key_column else (index if isinstance(index, str) else f"{index:012d}")
    try:
        caption, reason = clean_caption_value(row.get(cfg.caption_column))
        syn, syn_reason = _syn_captions(row, cfg)
        reason = reason or syn_reason
        if reason:
            return Skipped(key, reason)
        data = image_bytes(row.get(cfg.image_column))
        if data is None:
            return Skipped(key, "undecodable_image", "no image")
        try:
            image = decode_image(data)
            stored = stored_image_bytes(data, image)
        except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBomb...)
            return Skipped(key, "undecodable_image", f"{type(err).__name__}: {err}")
        if min(image.size) < cfg.min_image_size:
            return Skipped(key, "too_small", f"{image.size[0]}x{image.size[1]}")
        params = sample_augmentations((image.height, image.width), cfg.num_augmentations,
                                      seed_for_key(key, cfg.seed), output_size=cfg.aug_resolution,
                                      scale=cfg.crop_scale, magnitude=cfg.rand_augment_magnitude)
        views = replay_views(image, params, cfg.views, cfg.aug_resolution)
    except Exception as err:  # never crash a long run on one row
        return Skipped(key, "preprocess_error", f"{type(err).__name__}: {err}")
    ref = str(row.get(cfg.url_column)) if cfg.url_column else f"{cfg.source}#{index}"
    return PreparedSample(key=key, caption=caption, syn_captions=syn, aug_params=[compress(p) for p in params],
                          views=views, image_bytes=stored, image_ref=ref, image=image if cfg.keep_pil else None)


__all__ = ["KEPT_FORMATS", "SKIP_REASONS", "PrepConfig", "PreparedSample", "Skipped", "clean_caption_value",
           "image_bytes", "prepare_sample", "stored_image_bytes"]
