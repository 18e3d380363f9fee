"""What a reinforced dataset is: the one contract between ``dataset_builder`` (which writes it) and ``train/data.py``
(which reads it), also used by the dataset card, the DataCompDR reader/writer and the benchmarks.

This module owns the column names (and how further synthetic-caption sets are named), the ``datasets.Features``,
the metadata file ``reinforcement.json`` (``ReinforcementMetadata``), the shard file names, one row as a typed
``Record`` with its conversions to and from Arrow tables, and how a stored image is decoded (the stored crop boxes
refer to that decoded image). Nothing else spells a column name.

Columns (in this order):

* ``key``: string, unique sample key (the input's key column, or the 12-digit row index).
* ``image``: ``Image()``, the source JPEG/PNG bytes (other formats re-encoded as lossless PNG). Without stored images
  it is null and an extra ``image_ref`` string column holds the image URL or ``"{source}#{row index}"``. Decode with
  ``decode_image`` (``datasets.Image``, then ``to_rgb``): the crop boxes refer to that image.
* ``caption``: string, the real caption.
* ``syn_captions``: ``List(string, length=N)``, synthetic captions (a variable-length, empty list when N = 0).
* ``aug_params``: string, JSON list of K compressed augmentations, DataCompDR's ``paug.json["param_aug"]`` form
  (``augment.compress``): ``[[[i, j, h, w], [[op_index, magnitude], [op_index, magnitude]]], ...]``.
* ``image_emb``: ``List(List(float16, length=D), length=K)``, teacher embeddings of the K augmentations.
* ``text_emb``: ``List(List(float16, length=D), length=1 + N)``, the real caption first, then the N synthetic.

Further synthetic-caption sets (Apple's ``syn.json`` keys ``syn_text_<name>``, e.g. DFNDR's
``syn_text_dfn_mscoco38k``) are stored as ``syn_captions_<name>`` (M strings) with their teacher embeddings in
``syn_text_emb_<name>`` (M x D, same order); ``syn_captions``' embeddings are ``text_emb[1:]``.

An embedding row is the concatenation over teachers (in ``teachers`` order) of each teacher's L2-normalised
embedding. ``dtype`` is ``float16`` (default) or ``float32``; ``bfloat16`` rounds values to bf16 and stores them as
``float32`` (parquet and ``datasets`` have no bf16 type).
"""

from __future__ import annotations

import glob
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import datasets
import numpy as np
import pyarrow as pa
from datasets import Features, List, Value
from PIL import Image

from modeling_mobileclip.atomic import write_json
from modeling_mobileclip.image_processing_mobileclip import to_rgb
from modeling_mobileclip.paths import check_local_path

from .augment import DEFAULT_OUTPUT_SIZE, MAGNITUDE, NUM_MAGNITUDE_BINS, NUM_OPS, RRC_RATIO, RRC_SCALE

# Column names.
KEY = "key"
IMAGE = "image"
CAPTION = "caption"
SYN_CAPTIONS = "syn_captions"
AUG_PARAMS = "aug_params"
IMAGE_EMB = "image_emb"
TEXT_EMB = "text_emb"
IMAGE_REF = "image_ref"
COLUMNS = (KEY, IMAGE, CAPTION, SYN_CAPTIONS, AUG_PARAMS, IMAGE_EMB, TEXT_EMB)  # stored order; then IMAGE_REF
PAIR_COLUMNS = (IMAGE, CAPTION)  # what a plain image-caption dataset has too
REINFORCEMENT_COLUMNS = (SYN_CAPTIONS, AUG_PARAMS, IMAGE_EMB, TEXT_EMB)  # what reinforcement adds
SYN_CAPTIONS_PREFIX = SYN_CAPTIONS + "_"  # further caption sets: syn_captions_<name> ...
SYN_EMBEDDINGS_PREFIX = "syn_text_emb_"  # ... with their embeddings in syn_text_emb_<name>

# Files of a reinforced dataset folder.
METADATA_FILE = "reinforcement.json"
DATA_DIR = "data"
SHARD_NAME = "train-{shard:05d}-of-{num_shards:05d}.parquet"
DATA_FILES = f"{DATA_DIR}/train-*.parquet"  # the card's data_files pattern, relative to the folder

# Embedding storage per metadata dtype (parquet and datasets have no bfloat16: bf16-rounded values as float32).
STORAGE_DTYPES = {"float16": np.float16, "float32": np.float32, "bfloat16": np.float32}
_DECODER = datasets.Image()


def syn_captions_column(name: str) -> str:
    """The column of the synthetic-caption set ``name`` (Apple's ``syn_text_<name>``)."""
    return SYN_CAPTIONS_PREFIX + name


def syn_embeddings_column(name: str) -> str:
    """The column of the teacher embeddings of the synthetic-caption set ``name``."""
    return SYN_EMBEDDINGS_PREFIX + name


def is_synthetic_caption_set(column: str) -> bool:
    return column == SYN_CAPTIONS or column.startswith(SYN_CAPTIONS_PREFIX)


def synthetic_embedding_column(caption_set: str) -> str | None:
    """The column of a set's teacher embeddings; None for ``syn_captions``, whose embeddings are ``text_emb[1:]``."""
    if caption_set == SYN_CAPTIONS:
        return None
    return syn_embeddings_column(caption_set[len(SYN_CAPTIONS_PREFIX):])


def is_embedding_column(column: str) -> bool:
    """A column of (rows of) teacher embeddings, read as numbers rather than Python lists."""
    return column in (IMAGE_EMB, TEXT_EMB) or column.startswith(SYN_EMBEDDINGS_PREFIX)


def shard_path(output_dir: str, shard: int, num_shards: int) -> str:
    return os.path.join(output_dir, DATA_DIR, SHARD_NAME.format(shard=shard, num_shards=num_shards))


def shard_files(output_dir: str) -> list[str]:
    """The finished shards of a dataset folder, in order."""
    return sorted(glob.glob(os.path.join(glob.escape(output_dir), DATA_FILES)))


def reinforced_features(num_augmentations: int, num_synthetic_captions: int, dim: int, dtype: str = "float16",
                        store_images: bool = True) -> Features:
    """The ``Features`` of a reinforced dataset (bfloat16 values are stored as float32)."""
    value = Value("float16" if dtype == "float16" else "float32")
    features = {
        KEY: Value("string"),
        IMAGE: datasets.Image(),
        CAPTION: Value("string"),
        # Arrow aborts on fixed-size lists of length 0 (pyarrow 25/26), so N = 0 uses a variable-length list.
        SYN_CAPTIONS: List(Value("string"), length=num_synthetic_captions or -1),
        AUG_PARAMS: Value("string"),
        IMAGE_EMB: List(List(value, length=dim), length=num_augmentations),
        TEXT_EMB: List(List(value, length=dim), length=1 + num_synthetic_captions),
    }
    if not store_images:
        features[IMAGE_REF] = Value("string")
    return Features(features)


@dataclass(frozen=True)
class TeacherInfo:
    """One teacher's slice of the embeddings: its name, width and the logit scale it was trained with."""

    name: str
    dim: int
    logit_scale: float


@dataclass(frozen=True)
class AugmentationInfo:
    """How the stored augmentations were sampled (defaults: DataCompDR's recipe)."""

    scale: tuple[float, float] = RRC_SCALE
    ratio: tuple[float, float] = RRC_RATIO
    num_ops: int = NUM_OPS
    magnitude: int = MAGNITUDE
    num_magnitude_bins: int = NUM_MAGNITUDE_BINS
    teacher_resolution: int = DEFAULT_OUTPUT_SIZE


@dataclass(frozen=True)
class ReinforcementMetadata:
    """``reinforcement.json``: what the stored augmentations, captions and teacher embeddings are.

    Attributes:
        num_augmentations: K stored augmentations per image.
        num_synthetic_captions: N synthetic captions per image.
        teachers: the teachers, in embedding order.
        dtype: embedding storage, ``float16``, ``float32`` or ``bfloat16`` (stored as float32).
        augmentation: how the augmentations were sampled.
        seed: global seed of the augmentations and caption sampling.
        source: name of the input dataset.
        captioner: the synthetic captions' origin (a captioner name, ``column '<name>'``), or None.
        license: Hub licence id of the dataset, or None.
    """

    num_augmentations: int
    num_synthetic_captions: int
    teachers: tuple[TeacherInfo, ...]
    dtype: str = "float16"
    augmentation: AugmentationInfo = field(default_factory=AugmentationInfo)
    seed: int = 0
    source: str = ""
    captioner: str | None = None
    license: str | None = None

    @property
    def embedding_dim(self) -> int:
        return sum(t.dim for t in self.teachers)

    @property
    def teacher_dims(self) -> tuple[int, ...]:
        return tuple(t.dim for t in self.teachers)

    @property
    def teacher_logit_scales(self) -> tuple[float, ...]:
        return tuple(t.logit_scale for t in self.teachers)

    def features(self, store_images: bool = True) -> Features:
        return reinforced_features(self.num_augmentations, self.num_synthetic_captions, self.embedding_dim,
                                   self.dtype, store_images)

    def to_dict(self) -> dict:
        """The JSON object of ``reinforcement.json`` (``embedding_dim`` included, for readers of the file)."""
        a = self.augmentation
        return {
            "num_augmentations": self.num_augmentations, "num_synthetic_captions": self.num_synthetic_captions,
            "teachers": [{"name": t.name, "dim": t.dim, "logit_scale": t.logit_scale} for t in self.teachers],
            "embedding_dim": self.embedding_dim, "dtype": self.dtype,
            "augmentation": {"scale": list(a.scale), "ratio": list(a.ratio), "num_ops": a.num_ops,
                             "magnitude": a.magnitude, "num_magnitude_bins": a.num_magnitude_bins,
                             "teacher_resolution": a.teacher_resolution},
            "seed": self.seed, "source": self.source, "captioner": self.captioner, "license": self.license,
        }

    @classmethod
    def from_dict(cls, meta: dict, where: str = METADATA_FILE) -> "ReinforcementMetadata":
        """Parse and check a ``reinforcement.json`` object; ``where`` names it in errors.

        Raises:
            ValueError: A required entry is missing, the teacher widths do not sum to ``embedding_dim``, or there
                is no augmentation.
        """
        try:
            teachers = tuple(TeacherInfo(str(t.get("name", "")), int(t["dim"]), float(t["logit_scale"]))
                             for t in meta["teachers"])
            augmentation = {k: tuple(v) if isinstance(v, list) else v for k, v in meta.get("augmentation", {}).items()
                            if k in AugmentationInfo.__dataclass_fields__}
            info = cls(num_augmentations=int(meta["num_augmentations"]),
                       num_synthetic_captions=int(meta["num_synthetic_captions"]), teachers=teachers,
                       dtype=meta.get("dtype", "float16"), augmentation=AugmentationInfo(**augmentation),
                       seed=meta.get("seed", 0), source=meta.get("source", ""), captioner=meta.get("captioner"),
                       license=meta.get("license"))
        except (KeyError, TypeError) as err:
            raise ValueError(f"{where}: not a reinforcement metadata object ({type(err).__name__}: {err})") from err
        if "embedding_dim" in meta and info.embedding_dim != int(meta["embedding_dim"]):
            raise ValueError(f"{where}: teacher dims {info.teacher_dims} do not sum to embedding_dim "
                             f"{meta['embedding_dim']}")
        if info.num_augmentations < 1 or info.num_synthetic_captions < 0:
            raise ValueError(f"{where}: needs at least one augmentation, got {meta}")
        return info

    @classmethod
    def load(cls, source: str) -> "ReinforcementMetadata":
        """Read ``reinforcement.json`` from a local dataset folder or a Hub dataset repo.

        Raises:
            FileNotFoundError: ``source`` is a missing local path, or a folder without the file.
            ValueError: The file is not valid metadata (see ``from_dict``).
        """
        check_local_path(source, "Dataset")  # a mistyped folder, not a Hub id
        if os.path.isdir(source):
            path = os.path.join(source, METADATA_FILE)
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} not found: {source!r} is not a reinforced dataset written by "
                                        "dataset_builder")
        else:
            from huggingface_hub import hf_hub_download

            path = hf_hub_download(source, METADATA_FILE, repo_type="dataset")
        with open(path) as f:
            return cls.from_dict(json.load(f), path)

    def save(self, output_dir: str) -> None:
        """Write ``output_dir/reinforcement.json`` atomically."""
        write_json(os.path.join(output_dir, METADATA_FILE), self.to_dict())


@dataclass
class Record:
    """One row of a reinforced dataset, as the builder writes it and the DataCompDR reader and writer convert it.

    Attributes:
        key: unique sample key.
        caption: the real caption.
        syn_captions: the N synthetic captions.
        aug_params: the K compressed augmentations (``augment.compress``), as decoded JSON.
        image_emb: ``(K, D)`` teacher embeddings of the augmentations.
        text_emb: ``(1 + N, D)`` teacher embeddings of the real, then the synthetic captions.
        image_bytes: the encoded image (None when images are not stored).
        image_ref: where the image came from (stored only without images).
    """

    key: str
    caption: str | None
    syn_captions: list[str]
    aug_params: list
    image_emb: np.ndarray
    text_emb: np.ndarray
    image_bytes: bytes | None = None
    image_ref: str | None = None

    def to_row(self) -> dict:
        """A ``datasets`` row of ``reinforced_features(..., store_images=False)`` (``image`` may be null)."""
        image = None if self.image_bytes is None else {"bytes": self.image_bytes, "path": None}
        return {KEY: self.key, IMAGE: image, CAPTION: self.caption, SYN_CAPTIONS: list(self.syn_captions),
                AUG_PARAMS: json.dumps(self.aug_params), IMAGE_EMB: self.image_emb, TEXT_EMB: self.text_emb,
                IMAGE_REF: self.image_ref}


def _fixed_list(values: np.ndarray) -> pa.Array:
    # (n, K, D) -> fixed_size_list<fixed_size_list<value>[D]>[K], zero-copy from the flat buffer.
    n, k, d = values.shape
    flat = pa.array(values.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(flat, d), k)


def records_to_table(records: Sequence[Record], features: Features) -> pa.Table:
    """Arrow table of records with exactly ``features``' schema (and its ``huggingface`` metadata); images are
    stored unless ``features`` has an ``image_ref`` column."""
    store_images = IMAGE_REF not in features
    k, d = features[IMAGE_EMB].length, features[IMAGE_EMB].feature.length
    n1 = features[TEXT_EMB].length
    dtype = STORAGE_DTYPES[features[IMAGE_EMB].feature.feature.dtype]

    def stack(name: str, rows: int) -> np.ndarray:
        return np.stack([getattr(r, name) for r in records]) if records else np.zeros((0, rows, d), dtype)

    schema = features.arrow_schema
    columns = {
        KEY: pa.array([r.key for r in records], pa.string()),
        IMAGE: pa.array([{"bytes": r.image_bytes, "path": None} if store_images else None for r in records],
                        schema.field(IMAGE).type),
        CAPTION: pa.array([r.caption for r in records], pa.string()),
        SYN_CAPTIONS: pa.array([r.syn_captions for r in records], schema.field(SYN_CAPTIONS).type),
        AUG_PARAMS: pa.array([json.dumps(r.aug_params) for r in records], pa.string()),
        IMAGE_EMB: _fixed_list(stack(IMAGE_EMB, k)),
        TEXT_EMB: _fixed_list(stack(TEXT_EMB, n1)),
    }
    if not store_images:
        columns[IMAGE_REF] = pa.array([r.image_ref for r in records], pa.string())
    return pa.Table.from_pydict(columns, schema=schema)


def records_from_table(table: pa.Table) -> list[Record]:
    """The records of a shard's table (as ``records_to_table`` writes it, or without the ``image`` column)."""
    n = table.num_rows
    embeddings = {c: table[c].combine_chunks().flatten().flatten().to_numpy(zero_copy_only=False).reshape(
        n, table.schema.field(c).type.list_size, -1) for c in (IMAGE_EMB, TEXT_EMB)}
    rows = table.drop_columns([IMAGE_EMB, TEXT_EMB]).to_pylist()
    return [Record(key=row[KEY], caption=row[CAPTION], syn_captions=list(row[SYN_CAPTIONS]),
                   aug_params=json.loads(row[AUG_PARAMS]), image_emb=embeddings[IMAGE_EMB][j],
                   text_emb=embeddings[TEXT_EMB][j], image_bytes=(row.get(IMAGE) or {}).get("bytes"),
                   image_ref=row.get(IMAGE_REF)) for j, row in enumerate(rows)]


def decode_image(image: Any) -> Image.Image:
    """Decode a stored image to the RGB image its crop boxes refer to: encoded bytes, a ``datasets``
    ``Image(decode=False)`` value (``{"bytes", "path"}``) or a PIL image.

    Decoded like ``datasets.Image`` (which applies the EXIF orientation) and converted by ``to_rgb``, the conversion
    of the image processor: 16-bit images are scaled to 8 bits, 32-bit and float ones refused. The image is fully
    decoded here, so a truncated file fails in this call.

    Raises:
        Exception: Whatever PIL raises for undecodable or truncated data; ``ValueError`` for 32-bit or float images.
    """
    if isinstance(image, (bytes, bytearray)):
        image = {"bytes": bytes(image), "path": None}
    if not isinstance(image, Image.Image):
        image = _DECODER.decode_example(image)
    image = to_rgb(image)
    image.load()  # an RGB image is returned as is, possibly not decoded yet
    return image


def image_format(data: bytes) -> tuple[str | None, str]:
    """The file format and pixel mode of encoded image bytes (reads the header only)."""
    with Image.open(io.BytesIO(data)) as image:
        return image.format, image.mode


__all__ = [
    "AUG_PARAMS",
    "CAPTION",
    "COLUMNS",
    "DATA_DIR",
    "DATA_FILES",
    "IMAGE",
    "IMAGE_EMB",
    "IMAGE_REF",
    "KEY",
    "METADATA_FILE",
    "PAIR_COLUMNS",
    "REINFORCEMENT_COLUMNS",
    "SHARD_NAME",
    "STORAGE_DTYPES",
    "SYN_CAPTIONS",
    "SYN_CAPTIONS_PREFIX",
    "SYN_EMBEDDINGS_PREFIX",
    "TEXT_EMB",
    "AugmentationInfo",
    "Record",
    "ReinforcementMetadata",
    "TeacherInfo",
    "decode_image",
    "image_format",
    "is_embedding_column",
    "is_synthetic_caption_set",
    "records_from_table",
    "records_to_table",
    "reinforced_features",
    "shard_files",
    "shard_path",
    "syn_captions_column",
    "syn_embeddings_column",
    "synthetic_embedding_column",
]
