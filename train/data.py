"""Training data for MobileCLIP: reinforced datasets (DataCompDR format) and plain image-caption pairs.

A reinforced dataset (written by `dataset_builder`) is a local folder or Hub dataset of parquet shards with a
`reinforcement.json` next to them; `dataset_builder/schema.py` defines both (column names, features, metadata and how
a stored image is decoded). Its columns are `key`, `image`, `caption`, `syn_captions` (N strings), `aug_params` (JSON
list of K DataCompDR compressed augmentations), `image_emb` (K x D) and `text_emb` ((1 + N) x D, real caption first),
D being the concatenation of the teachers' individually L2-normalised embeddings.

One training sample (Apple's reinforced data loader, `training/open_clip_v2.patch`) is: one of the K stored
augmentations chosen uniformly and replayed at the student's own resolution, interpolation and normalisation; its
teacher embedding `image_emb[aug_idx]`; the real caption with `text_emb[0]`; and one synthetic caption j, chosen
uniformly, with `text_emb[1 + j]`.

Several synthetic-caption sets (Apple's `syn.json` keys `syn_text`, `syn_text_<name>`, e.g. DFNDR's
`syn_text_dfn_mscoco38k`, with embeddings in `text_emb` and `<key>_emb`) are stored as columns: `syn_captions`, whose
embeddings are `text_emb[1:]` (what dataset_builder writes), and any number of `syn_captions_<name>` (M strings) with
their teacher embeddings in `syn_text_emb_<name>` (M x D, same order). A regex over these column names
(`synthetic_caption_sets`) picks the sets a run samples from, as open_clip_v2.patch's
`--dataset-reinforcement-syn-text-key-regex` does over the `syn.json` keys: each sample draws one matched set
uniformly (among those non-empty in its row), then one caption of it.

Every random choice is a function of (seed, epoch, sample id) only, never of the worker, the rank or a global RNG, so
a resumed run sees the same samples as an uninterrupted one. Samples are decoded and augmented in DataLoader workers,
which read a batch's rows and tokenise its captions together (per-call costs dominated both one sample at a time).
Pixels leave the workers as uint8 in PIL's (H, W, 3) layout and become model inputs (float, channels first,
normalised) a batch at a time on the training device (`ImageSpec.normalize_batch`), bit for bit what a per-sample
conversion in the workers gave.
A corrupt sample (undecodable image, bad augmentation parameters, wrong embedding shape) is skipped and counted: the
map-style dataset substitutes the next readable row, so every rank keeps the same batch size for the all-gather.
A sample whose image is smaller than `filter_image_size` is skipped and counted the same way.

Pixels are by default exactly those dataset_builder replayed for the teachers: the stored image decoded in full, then
`dataset_builder.augment.apply_augmentation` at the student's size. `fast_jpeg_decode` trades that for speed: a JPEG
whose crop box is at least twice the output size in both dims is decoded at 1/2, 1/4 or 1/8 of its size by libjpeg's
DCT scaling (`SourceImage`), and the crop resized from there; the pixels then differ slightly from those the stored
teacher embeddings were computed on (see `SourceImage`). `fast_resize` resizes the crop with PyTorch's uint8 kernels
instead of PIL's (`resized_crop_uint8`), for pixels within a level or a few of the exact ones.
"""

import functools
import io
import json
import logging
import os
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from datasets import Dataset, load_dataset, load_dataset_builder
from datasets import Image as ImageFeature
from datasets.distributed import split_dataset_by_node
from PIL import ExifTags, Image
from torch.utils.data import default_collate
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from dataset_builder.augment import (
    AugmentationParams,
    Crop,
    apply_augmentation,
    check_crop,
    decompress,
    sample_augmentations,
    sample_crop,
    seed_for_key,
)
from dataset_builder.schema import (
    AUG_PARAMS,
    CAPTION,
    IMAGE,
    IMAGE_EMB,
    KEY,
    METADATA_FILE,
    PAIR_COLUMNS,
    REINFORCEMENT_COLUMNS,
    SYN_CAPTIONS,
    TEXT_EMB,
    ReinforcementMetadata,
    decode_image,
    is_embedding_column,
    is_synthetic_caption_set,
    syn_captions_column,
    syn_embeddings_column,
    synthetic_embedding_column,
)
from modeling_mobileclip import image_preprocessing
from modeling_mobileclip.paths import check_local_path

logger = logging.getLogger(__name__)

RECIPES = ("reinforced", "clip", "online_distill")
REQUIRED_COLUMNS = {
    "reinforced": PAIR_COLUMNS + REINFORCEMENT_COLUMNS,
    "clip": PAIR_COLUMNS,
    "online_distill": PAIR_COLUMNS,
}
# The map-style dataset gives up after this many consecutive unreadable rows: that is a broken dataset, not noise.
MAX_CONSECUTIVE_CORRUPT = 64
# A stream tokenises the captions of this many samples at a time (a map-style dataset: those of a batch).
STREAM_TOKENIZE_CHUNK = 16
_MAX_WARNINGS = 10
# The CLIP baseline's RandomResizedCrop scale: open_clip's training default (`AugmentationCfg.scale`), with which the
# paper's DataComp baselines were trained; reinforced samples replay their stored crops instead.
CLIP_CROP_SCALE = (0.9, 1.0)
DEFAULT_SYN_CAPTIONS_REGEX = f"^{SYN_CAPTIONS}$"  # the one set dataset_builder writes
# libjpeg's DCT scaling factors (`Image.draft`), largest first: a JPEG decoded at 1/s of its size in each dim.
JPEG_DCT_SCALES = (8, 4, 2)
# EXIF orientations that datasets' decoding (hence `decode_image`) rotates or flips; the others leave pixels as stored.
_TRANSPOSED_ORIENTATIONS = range(2, 9)


class SkippedSample(ValueError):
    """A readable sample that a filter leaves out; skipped and counted like a corrupt one."""


def synthetic_caption_sets(column_names: list[str] | None, regex: str, source: str = "dataset") -> tuple[str, ...]:
    """The synthetic-caption set columns whose names `regex` matches (`re.match`, as Apple's loader), sorted."""
    candidates = sorted(c for c in column_names or () if is_synthetic_caption_set(c))
    matched = tuple(c for c in candidates if re.match(regex, c))
    if not matched:
        raise ValueError(f"syn_captions_regex {regex!r} matches none of the synthetic-caption columns {candidates} of "
                         f"{source!r} (sets are `{SYN_CAPTIONS}` and `{syn_captions_column('<name>')}`)")
    return matched


@dataclass(frozen=True)
class Reinforcement:
    """What training needs of a reinforced dataset's metadata (`dataset_builder.schema.ReinforcementMetadata`).

    Attributes:
        num_augmentations: K stored augmentations per image.
        num_synthetic_captions: N synthetic captions per image.
        teacher_dims: width of each teacher's slice of the embeddings, in teacher order.
        teacher_logit_scales: each teacher's logit scale (σ_k of the distillation targets).
    """

    num_augmentations: int
    num_synthetic_captions: int
    teacher_dims: tuple[int, ...]
    teacher_logit_scales: tuple[float, ...]

    @classmethod
    def from_metadata(cls, meta: ReinforcementMetadata) -> "Reinforcement":
        return cls(meta.num_augmentations, meta.num_synthetic_captions, meta.teacher_dims, meta.teacher_logit_scales)

    @classmethod
    def load(cls, source: str) -> "Reinforcement":
        """Reads `reinforcement.json` from a local dataset folder or a Hub dataset repo."""
        try:
            meta = ReinforcementMetadata.load(source)
        except FileNotFoundError as err:
            if not os.path.isdir(source):  # a missing path: its own message is the clearest
                raise
            raise FileNotFoundError(f"{err} (for a plain image-caption dataset use recipe: clip)") from err
        return cls.from_metadata(meta)

    @property
    def embedding_dim(self) -> int:
        return sum(self.teacher_dims)


@dataclass(frozen=True)
class ImageSpec:
    """How a model wants its pixels: square size, resize interpolation, and mean/std (None: pixels in [0, 1])."""

    size: int
    interpolation: str = "bicubic"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def from_image_processor(cls, image_processor, interpolation: str = "bicubic") -> "ImageSpec":
        """The student's (or a teacher's) training resolution and normalisation, taken from its image processor."""
        prep = image_preprocessing(image_processor)
        return cls(size=prep["image_size"], interpolation=interpolation, mean=prep["image_mean"],
                   std=prep["image_std"])

    def to_tensor(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> uint8 (H, W, 3), PIL's own layout: what loader workers ship (a quarter of float32's shared
        memory and host-to-device copy, and a plain copy into the batch, where channels-first would be a strided one);
        the training step turns a batch of them into model inputs with `normalize_batch`."""
        return torch.from_numpy(np.array(image))

    def normalize_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) model inputs on the pixels' device: in [0, 1], normalised if the
        model was trained normalised. The ops of a per-image `pil_to_tensor(image).float().div_(255)` then
        `TF.normalize`, in that order, so the inputs are bit for bit those of a conversion one sample at a time on the
        CPU; the channels move first on the device, then the result is made contiguous."""
        if pixels.dtype != torch.uint8:  # float pixels would silently be divided by 255 a second time
            raise TypeError(f"normalize_batch takes uint8 pixels (ImageSpec.to_tensor), got {pixels.dtype}")
        if pixels.ndim != 4 or pixels.shape[-1] != 3:
            raise ValueError(f"normalize_batch takes (B, H, W, 3) pixels (ImageSpec.to_tensor), got shape "
                             f"{tuple(pixels.shape)}")
        # 255 as a tensor on the pixels' device: CUDA divides by a Python scalar as a multiplication by its
        # reciprocal, which can differ from a true division (the CPU's) in the last bit.
        x = pixels.permute(0, 3, 1, 2).float().div_(pixels.new_full((), 255.0, dtype=torch.float32))
        x = x if self.mean is None else TF.normalize(x, self.mean, self.std, inplace=True)
        return x.contiguous()


class Tokenize:
    """Tokenises captions to a fixed length (MobileCLIP text towers attend to padding, so always pad, with id 0).

    Each distinct caption is tokenised once per process and kept (up to `cache_size` of them): a reinforced sample
    carries its real caption and a synthetic one every epoch, and templated captions repeat across samples.
    """

    def __init__(self, tokenizer, context_length: int, cache_size: int = 2**16):
        self.tokenizer, self.context_length, self.cache_size = tokenizer, context_length, cache_size
        self._cache: dict[str, torch.Tensor] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if len(self._cache) + len(missing) > self.cache_size:  # full: start over rather than track recency
            self._cache.clear()
            missing = list(dict.fromkeys(texts))
        if missing:
            # No attention mask: the models take none, and building it was about 30% of a call's time.
            ids = self.tokenizer(missing, padding="max_length", max_length=self.context_length, truncation=True,
                                 return_attention_mask=False, return_tensors="pt")["input_ids"]
            self._cache.update(zip(missing, ids))
        return torch.stack([self._cache[t] for t in texts])


def dct_scale(crop: Crop, image_hw: tuple[int, int], output_size: int) -> int:
    """The largest of `JPEG_DCT_SCALES` by which the crop box, reduced, is still at least `output_size` in both dims
    (so still downscaled to the output, never upscaled); 1 if none is, or if the box is not inside the image."""
    try:
        check_crop(crop, image_hw)
    except ValueError:
        return 1  # decoded in full, where apply_augmentation reports the bad box
    _, _, h, w = crop
    return next((s for s in JPEG_DCT_SCALES if min(h, w) >= s * output_size), 1)


def _reducible_jpeg(value) -> Image.Image | None:
    """The stored image opened (header read, nothing decoded), if it is a JPEG that `decode_image` would not rotate
    or flip; otherwise None."""
    data = value.get("bytes") if isinstance(value, dict) else value if isinstance(value, (bytes, bytearray)) else None
    if data is None:
        return None
    image = Image.open(io.BytesIO(data))
    if image.format != "JPEG" or image.getexif().get(ExifTags.Base.Orientation) in _TRANSPOSED_ORIENTATIONS:
        return None
    return image


class SourceImage:
    """A row's stored image: its size (that of the image its crop boxes refer to), and the pixels to crop from.

    By default it is decoded in full by `decode_image`: the very image dataset_builder sampled the boxes on and
    replayed them from, so the replay reproduces the teachers' pixels exactly. With `reduce` (`fast_jpeg_decode`), a
    JPEG is only opened here (the header gives the size) and `decode` decodes it at 1/s of its size (`dct_scale`:
    the box is at least s times the output size in both dims), which skips most of the inverse DCT and of the colour
    conversion; other images, and JPEGs whose box allows no reduction, are decoded in full.

    libjpeg's scaled inverse DCT is an area-like low-pass, not the antialias filter of the full-size resize, so the
    pixels differ slightly from the exact ones, on which the stored teacher embeddings were computed. Measured on
    natural images (a photo and 1/f noise, 48-256 px outputs; tests/test_data_pipeline.py checks the bounds): the
    reduced crop's mean absolute difference is 1.1-2.4 levels of 255 on average and at most 5 in any sample (single
    pixels at sharp edges up to about 60); after the stored RandAugment ops, which amplify some differences (Solarize
    and Posterize flip pixels near their thresholds), 1.3-3.3 on average and at most 12 in any sample.
    """

    def __init__(self, value, reduce: bool = False):
        self._value = value
        self._opened = _reducible_jpeg(value) if reduce else None
        self._full = decode_image(value) if self._opened is None else None
        self.width, self.height = (self._opened if self._full is None else self._full).size

    def decode(self, crop: Crop, output_size: int) -> tuple[Image.Image, int]:
        """The image to replay `crop` from at up to `output_size`, and the factor it is reduced by (1: in full)."""
        if self._full is not None:
            return self._full, 1
        scale = dct_scale(crop, (self.height, self.width), output_size)
        if scale == 1:
            return decode_image(self._value), 1
        # PIL picks the largest DCT scale that keeps the image at least this size: exactly `scale`.
        self._opened.draft(None, (self.width // scale, self.height // scale))
        return decode_image(self._opened), scale


def resized_crop_uint8(image: Image.Image, crop: Crop, size: int, interpolation: InterpolationMode) -> Image.Image:
    """The `crop` box of an RGB image resized to `size` x `size` by PyTorch's antialiased uint8 interpolation
    (`F.interpolate(..., antialias=True)`, bilinear or bicubic), two to three times as fast on the CPU as the PIL
    resize of `apply_augmentation`. Not bit for bit PIL's. Measured on photo-like images
    (`testing_utils.natural_pixels`, 240x320 to 480x640, crops to 48-256 px; tests/test_data_pipeline.py checks the
    bounds): 0.3-5% of a crop's pixels differ, by 1-2 levels of 255 (bilinear) or up to 5 (bicubic), a mean absolute
    difference of 0.003-0.05 levels; after the stored RandAugment ops, which amplify a few of them (Solarize flips
    pixels next to its threshold), 0.004-0.06 on average and at most 0.8 in any sample.
    """
    check_crop(crop, (image.height, image.width))
    i, j, h, w = crop
    # The box of PIL's (H, W, 3) layout as a contiguous channels-last (1, 3, h, w): the fast path of the uint8 kernels
    # (a strided view takes twice as long), whose output is channels-last too, so (h, w, 3) again without a copy.
    pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None, :, i:i + h, j:j + w]
    pixels = pixels.contiguous(memory_format=torch.channels_last)
    out = F.interpolate(pixels, size=(size, size), mode=interpolation.value, antialias=True)
    return Image.fromarray(np.ascontiguousarray(out[0].permute(1, 2, 0).numpy()))


# Interpolations `resized_crop_uint8` has (PyTorch's antialiased uint8 resize); PIL's nearest has no equivalent there.
FAST_RESIZE_INTERPOLATIONS = ("bilinear", "bicubic")


def replay(image: Image.Image, scale: int, params: AugmentationParams, spec: ImageSpec,
           fast_resize: bool = False) -> Image.Image:
    """`params` replayed on `image` (the source image reduced `scale` times, `SourceImage.decode`) at `spec`'s size
    and interpolation; with `scale` 1 exactly Apple's `reapply` (training/dr/transforms.py), unless `fast_resize`
    resizes the crop with `resized_crop_uint8` instead of PIL (a reduced image is resized by PIL either way)."""
    interpolation = _interpolation(spec)
    if scale == 1 and fast_resize:
        image = resized_crop_uint8(image, params.crop, spec.size, interpolation)
        params = AugmentationParams((0, 0, spec.size, spec.size), params.ops)
    elif scale > 1:
        # The box in reduced coordinates (pixel k covers source pixels [k s, (k + 1) s)), resized from there with
        # sub-pixel precision; the stored ops then run on that output, replayed with a crop that is the whole image.
        i, j, h, w = params.crop
        box = (j / scale, i / scale, (j + w) / scale, (i + h) / scale)
        image = image.resize((spec.size, spec.size), TF.pil_modes_mapping[interpolation], box=box)
        params = AugmentationParams((0, 0, spec.size, spec.size), params.ops)
    return apply_augmentation(image, params, spec.size, interpolation)


class SampleTransform:
    """Turns raw dataset rows into model inputs; runs in DataLoader workers. `prepare` does one row's image and random
    choices, `tokenized` then a batch's captions at once; `__call__` does both for one row.

    Args:
        recipe: `"reinforced"`, `"clip"` or `"online_distill"`.
        student: the student's image spec (RRC output size, interpolation; its normalisation is the training
            step's, `ImageSpec.normalize_batch`: samples carry uint8 pixels).
        tokenize: the student's tokenizer at its context length.
        seed: base seed of every per-sample random choice.
        reinforcement: metadata of a reinforced dataset (reinforced recipe only).
        teacher: image spec of the live teachers (online_distill only).
        teacher_tokenize: the teachers' tokenizer (online_distill only).
        crop_scale: RandomResizedCrop area range of the clip recipe.
        syn_sets: synthetic-caption set columns to sample from (`synthetic_caption_sets`). Default: `syn_captions`
            for the reinforced recipe, none for online_distill (then the teachers see the real caption only).
        mix_synthetic_ratio: None, or the probability that the contrastive caption (and its teacher embedding) is the
            sample's synthetic caption instead of the real one; then there is no separate synthetic-caption batch.
        sample_sequential: the stored augmentation and the synthetic caption are number `epoch mod K` (resp. the
            set's size) instead of uniform draws; the set itself is still drawn, as in Apple's loader.
        min_image_size: skip (`SkippedSample`) images whose shorter side is smaller.
        fast_jpeg_decode: decode JPEGs at reduced size where the crop allows (`SourceImage`): faster, pixels slightly
            different from the exact replay's.
        fast_resize: resize the crop with PyTorch's uint8 kernels instead of PIL's (`resized_crop_uint8`): faster,
            pixels within a level or a few of the exact replay's. Bilinear or bicubic interpolation only.
    """

    def __init__(
        self,
        recipe: str,
        student: ImageSpec,
        tokenize: Tokenize,
        seed: int,
        reinforcement: Reinforcement | None = None,
        teacher: ImageSpec | None = None,
        teacher_tokenize: Tokenize | None = None,
        crop_scale: tuple[float, float] = CLIP_CROP_SCALE,
        syn_sets: tuple[str, ...] | None = None,
        mix_synthetic_ratio: float | None = None,
        sample_sequential: bool = False,
        min_image_size: int | None = None,
        fast_jpeg_decode: bool = False,
        fast_resize: bool = False,
    ):
        self.recipe, self.student, self.tokenize, self.seed = recipe, student, tokenize, seed
        self.reinforcement, self.teacher, self.teacher_tokenize = reinforcement, teacher, teacher_tokenize
        self.crop_scale = tuple(crop_scale)
        if syn_sets is None:
            syn_sets = (SYN_CAPTIONS,) if recipe == "reinforced" else ()
        if recipe == "clip" and syn_sets:
            raise ValueError("the clip recipe reads no synthetic captions")
        # A reinforced dataset with N = 0 stores an empty `syn_captions`: then it is no set to draw from.
        empty = recipe == "reinforced" and reinforcement.num_synthetic_captions == 0
        self.syn_sets = tuple(s for s in syn_sets if not (empty and s == SYN_CAPTIONS))
        if (mix_synthetic_ratio is not None or sample_sequential) and not self.syn_sets:
            raise ValueError("mixing or sequential sampling of synthetic captions needs a set of them, got none "
                             f"(syn_sets {syn_sets}, recipe {recipe})")
        self.mix_synthetic_ratio, self.sample_sequential = mix_synthetic_ratio, sample_sequential
        self.min_image_size, self.fast_jpeg_decode = min_image_size, fast_jpeg_decode
        unsupported = [spec.interpolation for spec in (student, teacher)
                       if spec and spec.interpolation not in FAST_RESIZE_INTERPOLATIONS]
        if fast_resize and unsupported:
            raise ValueError(f"fast_resize supports {' or '.join(FAST_RESIZE_INTERPOLATIONS)} interpolation, not "
                             f"{unsupported[0]!r}")
        self.fast_resize = fast_resize

    def __call__(self, row: dict, uid: str, epoch: int) -> dict[str, torch.Tensor]:
        """The model inputs of one row (the datasets below prepare a batch's rows, then tokenise them together)."""
        return self.tokenized([self.prepare(row, uid, epoch)])[0]

    def prepare(self, row: dict, uid: str, epoch: int) -> dict:
        """The sample of one row, its captions still strings (under their token-id keys) for `tokenized`."""
        sample_seed = seed_for_key(f"{epoch}:{uid}", self.seed)
        generator = torch.Generator().manual_seed(sample_seed)
        image = SourceImage(row[IMAGE], reduce=self.fast_jpeg_decode)
        if self.min_image_size and min(image.width, image.height) < self.min_image_size:  # `filter_small_image`
            raise SkippedSample(f"image {image.width}x{image.height} is smaller than {self.min_image_size}")
        caption = str(row[CAPTION])
        if self.recipe == "reinforced":
            return self._reinforced(row, image, caption, generator, epoch)
        if self.recipe == "clip":
            # Plain CLIP baseline: open_clip's RandomResizedCrop, drawn from the per-sample generator.
            crop = sample_crop((image.height, image.width), generator, scale=self.crop_scale)
            (pixels,) = self._pixels(image, AugmentationParams(crop, None), self.student)
            return {"pixel_values": pixels, "input_ids": caption}
        # online_distill: a fresh DataCompDR-style augmentation (RRC + RandAugment), shown to the student and, at the
        # teachers' resolution, to the teachers, like dataset_builder does offline. The caption draws come from the
        # generator, which the augmentation (seeded by sample_seed itself) does not use.
        params = sample_augmentations((image.height, image.width), 1, sample_seed)[0]
        texts = [caption]
        if self.syn_sets:
            syn_set, syn_idx, use_syn = self._synthetic_choice(row, generator, epoch)
            texts = self._mix([caption], [str(row[syn_set][syn_idx])], use_syn)
        pixels, teacher_pixels = self._pixels(image, params, self.student, self.teacher)
        sample = {
            "pixel_values": pixels,
            "input_ids": texts[0],
            "teacher_pixel_values": teacher_pixels,
            "teacher_input_ids": texts[0],
        }
        if len(texts) > 1:  # the teachers embed the synthetic caption live, as the reinforced data stores it
            sample.update(syn_input_ids=texts[1], teacher_syn_input_ids=texts[1])
        return sample

    def tokenized(self, samples: list[dict]) -> list[dict]:
        """`samples` from `prepare`, their captions replaced by token ids: one call of each tokenizer for all of them
        (the call's fixed cost, in a loader worker, is most of the cost of one sample's two captions)."""
        for tokenize, keys in ((self.tokenize, ("input_ids", "syn_input_ids")),
                               (self.teacher_tokenize, ("teacher_input_ids", "teacher_syn_input_ids"))):
            fields = [(sample, key) for sample in samples for key in keys if key in sample]
            if fields:
                for (sample, key), ids in zip(fields, tokenize([sample[key] for sample, key in fields]), strict=True):
                    sample[key] = ids
        return samples

    def _synthetic_choice(self, row: dict, generator: torch.Generator, epoch: int) -> tuple[str, int, bool]:
        """(set, caption index, whether it replaces the real caption) for this sample.

        The draws after the stored augmentation's, in this order: the set (only when several are non-empty, so that
        one set draws exactly what a single `syn_captions` did), the caption, then the mixing coin.
        """
        sets = [s for s in self.syn_sets if len(row[s])]
        if not sets:
            raise ValueError(f"no synthetic caption in any of {list(self.syn_sets)}")
        syn_set = sets[int(torch.randint(len(sets), (1,), generator=generator))] if len(sets) > 1 else sets[0]
        size = len(row[syn_set])
        syn_idx = epoch % size if self.sample_sequential else int(torch.randint(size, (1,), generator=generator))
        ratio = self.mix_synthetic_ratio
        use_syn = ratio is not None and float(torch.rand(1, generator=generator)) < ratio
        return syn_set, syn_idx, use_syn

    def _mix(self, real: list, synthetic: list, use_syn: bool) -> list:
        """[real, synthetic] items; with mixing only the contrastive one, the synthetic if `use_syn` (Apple drops the
        separate synthetic batch: "no double loss on gt/syn captions")."""
        if self.mix_synthetic_ratio is None:
            return real + synthetic
        return synthetic if use_syn else real

    def _synthetic_embeddings(self, row: dict, text_emb: np.ndarray) -> dict[str, np.ndarray]:
        """Each set's stored teacher embeddings, checked against its captions."""
        info, found = self.reinforcement, {}
        for syn_set in self.syn_sets:
            column = synthetic_embedding_column(syn_set)
            emb = text_emb[1:] if column is None else np.asarray(row[column])
            want = (len(row[syn_set]), info.embedding_dim)
            if emb.shape != want and not (len(row[syn_set]) == 0 and emb.size == 0):
                raise ValueError(f"{column or TEXT_EMB + '[1:]'} has shape {emb.shape}, expected {want} ({syn_set})")
            found[syn_set] = emb
        return found

    def _reinforced(self, row: dict, image: SourceImage, caption: str, generator: torch.Generator,
                    epoch: int) -> dict:
        info = self.reinforcement
        aug_params = json.loads(row[AUG_PARAMS])
        image_emb, text_emb = np.asarray(row[IMAGE_EMB]), np.asarray(row[TEXT_EMB])
        syn_captions = list(row[SYN_CAPTIONS])
        expected = {
            AUG_PARAMS: (len(aug_params), info.num_augmentations),
            IMAGE_EMB: (image_emb.shape, (info.num_augmentations, info.embedding_dim)),
            TEXT_EMB: (text_emb.shape, (1 + info.num_synthetic_captions, info.embedding_dim)),
            SYN_CAPTIONS: (len(syn_captions), info.num_synthetic_captions),
        }
        for name, (got, want) in expected.items():
            if got != want:
                raise ValueError(f"{name} has shape/length {got}, expected {want} ({METADATA_FILE})")
        syn_emb = self._synthetic_embeddings(row, text_emb)
        # Sequential: the k-th epoch replays stored augmentation k mod K (Apple's `shared_epoch % len(param_aug)`).
        if self.sample_sequential:
            aug_idx = epoch % info.num_augmentations
        else:
            aug_idx = int(torch.randint(info.num_augmentations, (1,), generator=generator))
        texts, rows = [caption], [text_emb[0]]
        if self.syn_sets:  # a dataset may have none (N = 0): then only the real-caption batch
            syn_set, syn_idx, use_syn = self._synthetic_choice(row, generator, epoch)
            texts = self._mix(texts, [str(row[syn_set][syn_idx])], use_syn)
            rows = self._mix(rows, [syn_emb[syn_set][syn_idx]], use_syn)
        teacher = np.stack([image_emb[aug_idx], *rows])
        if not np.isfinite(teacher).all():  # in the stored dtype: float32 keeps every inf and NaN
            raise ValueError("non-finite teacher embedding")
        teacher = torch.from_numpy(teacher).float()
        (pixels,) = self._pixels(image, decompress(aug_params[aug_idx]), self.student)
        sample = {
            "pixel_values": pixels,
            "input_ids": texts[0],
            "teacher_image_embeds": teacher[0],
            "teacher_text_embeds": teacher[1],
        }
        if len(texts) > 1:
            sample.update(syn_input_ids=texts[1], teacher_syn_text_embeds=teacher[2])
        return sample

    def _pixels(self, image: SourceImage, params: AugmentationParams, *specs: ImageSpec) -> list[torch.Tensor]:
        """The same crop box, in source pixels, replayed at each model's size: one decode for all of them."""
        decoded, scale = image.decode(params.crop, max(spec.size for spec in specs))
        return [spec.to_tensor(replay(decoded, scale, params, spec, self.fast_resize)) for spec in specs]


def _interpolation(spec: ImageSpec) -> InterpolationMode:
    return InterpolationMode(spec.interpolation)


def _warn_corrupt(count: int, uid: str, error: Exception) -> None:
    if count <= _MAX_WARNINGS:
        kind = "filtered" if isinstance(error, SkippedSample) else "corrupt"
        logger.warning("Skipping %s sample %s: %s: %s", kind, uid, type(error).__name__, error)


def _embedding_values(column: pa.ChunkedArray) -> list[np.ndarray]:
    """Each cell of a column of embedding rows as a `(rows, D)` array of the stored dtype (`(0,)` if no cell has one).

    Kept in the stored dtype (float16): the transform converts only the rows it picks to float32. One Arrow-to-NumPy
    copy for the whole column, split into cells.
    """
    cells = column.combine_chunks()
    rows = cells.flatten()
    values = rows.flatten().to_numpy(zero_copy_only=False)
    values = values.reshape(len(rows), -1) if len(rows) else values
    return np.split(values, np.cumsum(pc.list_value_length(cells).to_numpy(zero_copy_only=False))[:-1])


class ArrowRows:
    """Rows of a `datasets.Dataset` read from its Arrow table: embedding columns as NumPy arrays, the others as
    Python values (strings, lists, `{"bytes", "path"}` images), as its numpy format gives them.

    datasets' numpy formatter converts a K x D embedding one row of D at a time, which cost a third of a loader
    worker's time per sample; one flat Arrow-to-NumPy copy per column does not, and reading a batch's rows together
    (`rows`) saves most of the per-row cost that remains.
    """

    def __init__(self, dataset: Dataset):
        self.table = dataset.with_format("arrow")

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> dict:
        return self.rows([index])[0]

    def rows(self, indices: list[int]) -> list[dict]:
        """The rows at `indices`, read together: one Arrow gather, and one conversion per column."""
        table = self.table[indices]
        names = table.column_names
        columns = [_embedding_values(table[name]) if is_embedding_column(name) else table[name].to_pylist()
                   for name in names]
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


class MapStyleDataset(torch.utils.data.Dataset):
    """A local (map-style) dataset: index -> transformed sample; corrupt rows are replaced by the next good one.

    `dataset` is a `datasets.Dataset` (read through `ArrowRows`) or any sequence of rows.
    """

    def __init__(self, dataset, transform: SampleTransform):
        self.dataset = ArrowRows(dataset) if isinstance(dataset, Dataset) else dataset
        self.transform, self.epoch, self._skipped = transform, 0, 0

    def set_epoch(self, epoch: int) -> None:
        """Called before each epoch; workers are re-created per epoch, so they see the new value."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        """The samples at `indices`, which torch's fetcher asks for a batch at a time: their rows read together,
        prepared one by one, their captions then tokenised together (`SampleTransform.tokenized`)."""
        if isinstance(self.dataset, ArrowRows):
            rows = self.dataset.rows(indices)
        else:  # any sequence of rows
            rows = [self.dataset[index] for index in indices]
        return self.transform.tokenized([self._prepare(index, row) for index, row in zip(indices, rows)])

    def _prepare(self, index: int, row: dict) -> dict:
        """The sample of row `index`, or of the next readable row after it."""
        for offset in range(MAX_CONSECUTIVE_CORRUPT):
            row_index = (index + offset) % len(self.dataset)
            try:
                sample = self.transform.prepare(row if offset == 0 else self.dataset[row_index], str(row_index),
                                                self.epoch)
            except Exception as error:  # any unreadable row is data noise; the training must go on
                self._skipped += 1
                _warn_corrupt(self._skipped, f"row {row_index}", error)
                continue
            return {**sample, "num_skipped": offset}
        raise RuntimeError(f"{MAX_CONSECUTIVE_CORRUPT} consecutive corrupt or filtered rows from row {index}: is the "
                           "data broken, or does filter_image_size leave out nearly every image?")


class StreamingDataset(torch.utils.data.IterableDataset):
    """A streamed dataset, already split by rank: an endless stream of epochs (`--dataset-resampled` in the paper).

    Endless, because ranks receive different amounts of data and must never run out at different times.
    Each DataLoader worker reads its own parquet shards (datasets splits them by worker).
    """

    def __init__(self, dataset, transform: SampleTransform):
        self.dataset, self.transform = dataset, transform

    def __iter__(self):
        skipped, epoch, position, prepared = 0, 0, 0, []
        while True:
            self.dataset.set_epoch(epoch)  # reshuffles shard order and buffer with seed + epoch
            empty = True
            for row in self.dataset:
                empty = False
                uid = str(row[KEY]) if KEY in row else f"{epoch}:{position}"
                position += 1
                try:
                    sample = self.transform.prepare(row, uid, epoch)
                except Exception as error:
                    skipped += 1
                    _warn_corrupt(skipped, uid, error)
                    continue
                prepared.append({**sample, "num_skipped": skipped})
                skipped = 0
                if len(prepared) == STREAM_TOKENIZE_CHUNK:
                    yield from self.transform.tokenized(prepared)
                    prepared = []
            yield from self.transform.tokenized(prepared)  # the epoch's last samples
            prepared = []
            if empty:  # a worker with no shard of its own: stop instead of spinning
                return
            epoch += 1


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    """Stacks samples into a batch; `num_skipped` becomes the number of corrupt rows skipped for this batch.

    Stacked by `default_collate`, which in a worker stacks straight into shared memory: the batch then reaches the
    main process without another copy.
    """
    batch = {key: default_collate([s[key] for s in samples]) for key in samples[0] if key != "num_skipped"}
    batch["num_skipped"] = torch.tensor(sum(s["num_skipped"] for s in samples))
    return batch


def check_columns(column_names: list[str] | None, recipe: str, source: str) -> None:
    """Raises a clear error if the dataset lacks a column the recipe needs."""
    missing = [c for c in REQUIRED_COLUMNS[recipe] if c not in (column_names or [])]
    if missing:
        hint = " Use recipe: clip for a dataset of plain image-caption pairs." if recipe == "reinforced" else ""
        raise ValueError(
            f"Dataset {source!r} lacks the column(s) {missing} needed by recipe {recipe!r} "
            f"(it has {column_names}).{hint}"
        )


def load_rows(source: str, split: str, streaming: bool = False, **kwargs):
    """`load_dataset`, except that a local folder rebuilt in place is read anew.

    datasets 5 keys its Arrow cache of a folder whose README declares the data files on the folder alone, not on the
    files' modification times, and would serve the old rows of a rebuilt dataset. Data files passed explicitly are
    keyed with their modification times, so resolve the card's files and pass them. A missing local path is a
    `FileNotFoundError` naming it, not a Hub error.
    """
    check_local_path(source, "Dataset")
    if os.path.isdir(source) and not streaming and "data_files" not in kwargs:
        kwargs["data_files"] = load_dataset_builder(source).config.data_files
    return load_dataset(source, split=split, streaming=streaming, **kwargs)


def _variable_length(table: pa.Table, columns: list[str]) -> pa.Table:
    """Casts fixed-size nested list columns to variable-length lists of the same values."""
    for name in columns:
        value_type = table.schema.field(name).type.value_type.value_type
        column = table[name].cast(pa.list_(pa.list_(value_type)))
        table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def load_train_dataset(
    source: str,
    split: str,
    recipe: str,
    streaming: bool,
    seed: int,
    shuffle_buffer_size: int,
    rank: int,
    world_size: int,
    cache_dir: str | None = None,
    syn_sets: tuple[str, ...] = (),
):
    """Loads the raw rows: a map-style `Dataset`, or a shuffled `IterableDataset` already split for this rank.

    Images are kept encoded (`Image(decode=False)`) so that they are decoded in the workers, where a failure can be
    caught per sample. Embeddings come as NumPy arrays: per-example Python lists of floats are ~4x slower.
    `syn_sets` are synthetic-caption set columns to keep besides the recipe's (`synthetic_caption_sets`), with
    their embedding columns for the reinforced recipe.
    """
    dataset = load_rows(source, split, streaming, cache_dir=cache_dir)
    check_columns(dataset.column_names, recipe, source)
    extra = [c for c in syn_sets if c not in REQUIRED_COLUMNS[recipe]]
    if recipe == "reinforced":
        extra += [c for c in map(synthetic_embedding_column, syn_sets) if c]
    if missing := [c for c in extra if c not in dataset.column_names]:
        raise ValueError(f"Dataset {source!r} lacks the synthetic-caption column(s) {missing} (each set "
                         f"`{syn_captions_column('<name>')}` needs its embeddings in "
                         f"`{syn_embeddings_column('<name>')}`)")
    needed = list(REQUIRED_COLUMNS[recipe]) + extra + ([KEY] if KEY in dataset.column_names else [])
    if streaming and set(dataset.column_names) - set(needed):
        # Reload with a projection pushed down to parquet: select_columns would still read every column.
        dataset = load_dataset(source, split=split, streaming=True, columns=needed)
    dataset = dataset.select_columns(needed).cast_column(IMAGE, ImageFeature(decode=False))
    numeric = [c for c in needed if is_embedding_column(c)]
    if not streaming:
        return dataset.with_format("numpy", columns=numeric, output_all_columns=True) if numeric else dataset
    if numeric:
        # pyarrow 26.0.1's `take` reads garbage from a *sliced* list<fixed_size_list> array, and the streaming shuffle
        # buffer takes rows from sliced tables: some teacher embeddings come out silently corrupted. Variable-length
        # lists are taken correctly, so convert before shuffling (a per-batch cast, before the buffer).
        dataset = dataset.with_format("arrow").map(functools.partial(_variable_length, columns=numeric), batched=True)
        dataset = dataset.with_format("numpy")  # strings and image bytes pass through unchanged
    dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size)
    # Split here and never prepare() this loader: both together would shard twice and skip half the data.
    return split_dataset_by_node(dataset, rank=rank, world_size=world_size)


def build_train_dataloader(
    dataset, transform: SampleTransform, batch_size: int, num_workers: int, streaming: bool
) -> torch.utils.data.DataLoader:
    """The per-device training DataLoader; `drop_last` because the loss all-gathers equal-sized batches."""
    if streaming:
        # datasets gives each worker whole shards; more workers than shards would sit idle.
        workers = min(num_workers, dataset.n_shards)
        return torch.utils.data.DataLoader(
            StreamingDataset(dataset, transform), batch_size=batch_size, num_workers=workers, collate_fn=collate,
            drop_last=True,
        )
    return torch.utils.data.DataLoader(
        MapStyleDataset(dataset, transform), batch_size=batch_size, shuffle=True, num_workers=num_workers,
        collate_fn=collate, drop_last=True,
    )


__all__ = [
    "CLIP_CROP_SCALE",
    "DEFAULT_SYN_CAPTIONS_REGEX",
    "FAST_RESIZE_INTERPOLATIONS",
    "JPEG_DCT_SCALES",
    "RECIPES",
    "REQUIRED_COLUMNS",
    "ImageSpec",
    "MapStyleDataset",
    "Reinforcement",
    "SampleTransform",
    "SkippedSample",
    "SourceImage",
    "StreamingDataset",
    "Tokenize",
    "build_train_dataloader",
    "check_columns",
    "collate",
    "dct_scale",
    "decode_image",
    "load_rows",
    "load_train_dataset",
    "replay",
    "resized_crop_uint8",
    "synthetic_caption_sets",
    "synthetic_embedding_column",
]
