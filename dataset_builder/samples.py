"""Per-sample preparation for the builder: decode and validate an input row, sample its augmentations, replay them.

Runs in DataLoader worker processes, so it holds no model: ``prepare_sample`` gets only the teacher views
(resolution, interpolation) it must replay. Bad input never raises; the returned sample carries a ``skip`` reason
instead (one of ``SKIP_REASONS``), which the builder counts in ``report.json``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import datasets
from PIL import Image

from .augment import MAGNITUDE, RRC_SCALE, compress, sample_augmentations, seed_for_key
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
_DECODER = datasets.Image()


@dataclass
class PrepConfig:
    """What a worker needs to prepare samples (picklable, no models)."""

    image_column: str
    caption_column: str
    views: Sequence[tuple[int, str]]
    num_augmentations: int
    seed: int
    aug_resolution: int = 224
    crop_scale: Sequence[float] = RRC_SCALE
    key_column: str | None = None
    url_column: str | None = None
    syn_captions_column: str | None = None
    num_synthetic_captions: int = 0
    min_image_size: int = 2
    keep_pil: bool = False  # the captioner needs the decoded image in the main process
    source: str = ""
    rand_augment_magnitude: int = MAGNITUDE
    extra: dict = field(default_factory=dict)


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


def decode_image(data: bytes) -> tuple[Image.Image, bytes]:
    """Decode like ``datasets.Image`` (so EXIF orientation matches what readers see), convert to RGB with ``to_rgb``,
    the conversion training and the image processor use (16-bit images scaled to 8 bits, 32-bit and float refused).

    Returns:
        The RGB image and the bytes to store: the source bytes for 8-bit JPEG/PNG, else a lossless PNG of the RGB
        image (also for 16-bit PNGs, which any reader's ``convert("RGB")`` would clip).

    Raises:
        Exception: Whatever PIL raises for undecodable or truncated data; ``ValueError`` for 32-bit or float images.
    """
    # The package's one conversion to 8-bit RGB; imported here, where it is used, as it loads the model package.
    from modeling_mobileclip.image_processing_mobileclip import SIXTEEN_BIT_MODES, to_rgb

    image = _DECODER.decode_example({"bytes": data, "path": None})
    fmt = Image.open(io.BytesIO(data)).format
    rgb = to_rgb(image)
    if fmt in KEPT_FORMATS and image.mode not in SIXTEEN_BIT_MODES:
        return rgb, data
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return rgb, buf.getvalue()


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


def prepare_sample(row: dict, index: int, cfg: PrepConfig) -> dict:
    """Turn one input row into a sample dict, or into ``{"key", "skip", "detail"}`` for bad input.

    Keys of a good sample: ``key, image_bytes, image_ref, caption, syn_captions (or None), aug_params (compressed),
    views {(size, interpolation): uint8 (K, 3, S, S)}`` and ``image`` (RGB PIL, only with ``keep_pil``).
    """
    key = str(row[cfg.key_column]) if cfg.key_column else (index if isinstance(index, str) else f"{index:012d}")
    try:
        caption, reason = clean_caption_value(row.get(cfg.caption_column))
        syn, syn_reason = _syn_captions(row, cfg)
        reason = reason or syn_reason
        if reason:
            return {"key": key, "skip": reason, "detail": ""}
        data = image_bytes(row.get(cfg.image_column))
        if data is None:
            return {"key": key, "skip": "undecodable_image", "detail": "no image"}
        try:
            image, stored = decode_image(data)
        except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBomb...)
            return {"key": key, "skip": "undecodable_image", "detail": f"{type(err).__name__}: {err}"}
        if min(image.size) < cfg.min_image_size:
            return {"key": key, "skip": "too_small", "detail": f"{image.size[0]}x{image.size[1]}"}
        params = sample_augmentations((image.height, image.width), cfg.num_augmentations,
                                      seed_for_key(key, cfg.seed), output_size=cfg.aug_resolution,
                                      scale=cfg.crop_scale, magnitude=cfg.rand_augment_magnitude)
        views = replay_views(image, params, cfg.views, cfg.aug_resolution)
    except Exception as err:  # never crash a long run on one row
        return {"key": key, "skip": "preprocess_error", "detail": f"{type(err).__name__}: {err}"}
    ref = str(row.get(cfg.url_column)) if cfg.url_column else f"{cfg.source}#{index}"
    return {"key": key, "skip": None, "image_bytes": stored, "image_ref": ref, "caption": caption,
            "syn_captions": syn, "aug_params": [compress(p) for p in params], "views": views,
            "image": image if cfg.keep_pil else None}


__all__ = ["KEPT_FORMATS", "SKIP_REASONS", "PrepConfig", "clean_caption_value", "decode_image", "image_bytes",
           "prepare_sample"]
