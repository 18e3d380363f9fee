"""Build a reinforced (DataCompDR-style) dataset: sharded, resumable, deterministic.

Output layout of ``output_dir``::

    data/train-{shard:05d}-of-{num_shards:05d}.parquet   the rows (one parquet file per shard)
    README.md          dataset card: YAML ``configs`` (data_files ``data/train-*.parquet``), ``dataset_info`` features
                       and ``reinforcement`` (the metadata below)
    reinforcement.json ``schema.ReinforcementMetadata``: {"num_augmentations": K, "num_synthetic_captions": N,
                        "teachers": [{"name": str, "dim": int, "logit_scale": float}, ...],
                        "embedding_dim": D (sum of teacher dims), "dtype": "float16",
                        "augmentation": {"scale": [0.08, 1.0], "ratio": [0.75, 1.333...], "num_ops": 2,
                                         "magnitude": 9, "num_magnitude_bins": 31, "teacher_resolution": 224},
                        "seed": int, "source": str}
    report.json        rows in/out, skipped rows per reason (with examples), storage bytes per sample and column
    .build/            fingerprint of the build settings and one report per finished shard (used on resume)

Columns, metadata and the per-row record: ``schema.py``. Embedding rows concatenate the teachers' L2-normalised
embeddings in ``teachers`` order, so every teacher slice has unit norm.

Determinism: augmentation parameters are seeded by ``seed_for_key(key, seed)`` and each synthetic caption by a
per-key, per-caption seed, so they do not depend on sharding, batching, process or worker. Embeddings (and, in a
near-tie of two tokens, a caption) depend only on the sample up to float rounding of batched kernels (bit-identical
for the same sharding and batch size on the same hardware).
Resume: a shard is done iff its final parquet file exists (written to a temporary name, then renamed:
``modeling_mobileclip.atomic``); rerunning the same command skips finished shards, removes the temporary files a kill
left behind and rebuilds the rest from scratch, whichever process builds them (this one, the ranks of ``accelerate
launch`` or Ray workers: ``ray_engine``). ``.build/settings.json`` fingerprints everything that decides the
rows and their content (the metadata, sharding, columns, the input's kind, length and first row, and
``input_options`` such as the split): a rerun into the folder with other settings is an error once a shard is
finished (before that, the settings are replaced).

Failures (``BuildError``, nothing is finalised): arguments and input columns are checked before any teacher runs; a
shard skipping more than ``max_skipped_fraction`` of its rows is not written and stops the build (a wrong column
or format skips nearly every row); a build that wrote no row, or stored a key in two shards, is not finalised. A key
seen twice in one shard is skipped (``duplicate_key``); across shards it is an error rather than a silent choice of
one copy, since only the whole build sees it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import datasets
import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image
from tqdm.auto import tqdm

from modeling_mobileclip.atomic import atomic_path, temporaries, write_json

from .augment import MAGNITUDE, NUM_MAGNITUDE_BINS, RRC_SCALE, seed_for_key
from .card import BuildError, finalize_dataset, settings_path, shard_report_path
from .samples import PreparedSample, PrepConfig, Skipped, image_bytes, prepare_sample
from .schema import (
    DATA_DIR,
    SHARD_NAME,
    STORAGE_DTYPES,
    AugmentationInfo,
    Record,
    ReinforcementMetadata,
    TeacherInfo,
    records_to_table,
    shard_files,
    shard_path,
)
from .teachers import Teacher, TeacherEnsemble

if TYPE_CHECKING:
    from .ray_engine import RayEngine

logger = logging.getLogger(__name__)
DEFAULT_MAX_SKIPPED_FRACTION = 0.5
_STRINGS = ("string", "large_string", "binary", "large_binary")


def _feature_problem(kind: str, feature: Any) -> str | None:
    """Why a column with this ``datasets`` feature cannot be read as ``kind`` (None when it can)."""
    text = isinstance(feature, datasets.Value) or (
        isinstance(feature, (datasets.List, datasets.LargeList)) and isinstance(feature.feature, datasets.Value)
        and feature.feature.dtype in _STRINGS)
    ok = {
        "image": isinstance(feature, datasets.Image)
        or (isinstance(feature, datasets.Value) and feature.dtype in _STRINGS)
        or (isinstance(feature, dict) and ("bytes" in feature or "path" in feature)),
        "text": text,
        "syn": text or (isinstance(feature, dict) and "syn_text" in feature),  # DataCompDR's syn.json
        "scalar": isinstance(feature, datasets.Value),
    }[kind]
    return None if ok else f"holds {feature}"


def _value_problem(kind: str, value: Any) -> str | None:
    """Like ``_feature_problem`` for a cell of the first row (inputs whose features are unknown)."""
    scalar = value is None or isinstance(value, (str, bytes, int, float))
    text = scalar or (isinstance(value, (list, tuple)) and all(v is None or isinstance(v, (str, bytes)) for v in value))
    ok = {
        "image": value is None or isinstance(value, (bytes, bytearray, str, Image.Image))
        or (isinstance(value, dict) and ("bytes" in value or "path" in value)),
        "text": text,
        "syn": text or (isinstance(value, dict) and "syn_text" in value),
        "scalar": scalar,
    }[kind]
    return None if ok else f"holds {type(value).__name__} values"


_EXPECTED = {"image": "encoded images (an Image feature, image bytes or file paths)",
             "text": "text (strings, or lists of strings)", "syn": "lists of strings (or DataCompDR's syn.json)",
             "scalar": "scalar values"}


def _first_row(dataset: Any) -> dict | None:
    if isinstance(dataset, datasets.IterableDataset):
        return next(iter(dataset), None)
    return dataset[0] if len(dataset) else None


def check_input(dataset: datasets.Dataset | datasets.IterableDataset, image_column: str = "image",
                caption_column: str = "caption", key_column: str | None = None, url_column: str | None = None,
                syn_captions_column: str | None = None) -> None:
    """Check that ``dataset`` has rows and that the named columns exist and hold what they are read as.

    Uses the dataset's features, or its first row when they are unknown (some streamed inputs), so that a wrong
    column fails here, in seconds, instead of skipping every row of a long build.

    Raises:
        BuildError: Naming the column and the problem.
    """
    features = dataset.features if isinstance(dataset.features, datasets.Features) else None
    empty = isinstance(dataset, datasets.Dataset) and not len(dataset)
    row = None
    if features is None:  # only then: reading a row decodes its image, which may be corrupt
        row = _first_row(dataset)
        empty = row is None
    if empty:
        raise BuildError("the input has no rows (check the split, data files and max_samples)")
    names = list(features if features is not None else row)
    for option, name, kind in (("image_column", image_column, "image"), ("caption_column", caption_column, "text"),
                               ("key_column", key_column, "scalar"), ("url_column", url_column, "scalar"),
                               ("syn_captions_column", syn_captions_column, "syn")):
        if name is None:
            continue
        if name not in names:
            raise BuildError(f"{option} {name!r} is not a column of the input; its columns are {names}")
        problem = _feature_problem(kind, features[name]) if features is not None else _value_problem(kind, row[name])
        if problem:
            raise BuildError(f"{option} {name!r} {problem}, not {_EXPECTED[kind]}")


def _row_digest(row: dict | None, columns: Sequence[str | None], image_column: str) -> str | None:
    """Digest of the first row's content in the columns read (image bytes, not the file path, which can move)."""
    if row is None:
        return None
    cells = {}
    for name in filter(None, columns):
        value = row.get(name)
        if name == image_column:
            try:
                value = hashlib.sha256(image_bytes(value) or b"").hexdigest()
            except OSError:  # an unreadable file: that row is skipped; its path still identifies it
                value = repr(value)
        cells[name] = value
    return hashlib.sha256(json.dumps(cells, sort_keys=True, default=repr).encode()).hexdigest()


@dataclass(frozen=True)
class ShardPlan:
    """Which input rows make output shard i (see ``plan_shards``)."""

    dataset: Any
    num_shards: int
    input_shards: bool = False  # an iterable dataset whose own shards (files) are the output shards

    def indices(self, shard: int) -> range:
        """A map-style dataset's contiguous, near-equal range of rows of ``shard``."""
        total = len(self.dataset)
        return range(total * shard // self.num_shards, total * (shard + 1) // self.num_shards)

    def rows(self, shard: int) -> Iterator[tuple[int | str, dict]]:
        """``(row index, row)`` of ``shard``, in input order (a string index ``"{input shard}-{row}"`` for an
        iterable dataset's own shards)."""
        if isinstance(self.dataset, datasets.Dataset):
            return ((j, self.dataset[j]) for j in self.indices(shard))
        if self.input_shards:
            part = self.dataset.shard(self.num_shards, shard)
            return ((f"{shard:05d}-{j:07d}", row) for j, row in enumerate(part))
        return islice(enumerate(self.dataset), shard, None, self.num_shards)


def plan_shards(dataset: Any, num_shards: int | None, samples_per_shard: int) -> ShardPlan:
    """Fix the output shards.

    Map-style datasets are cut into contiguous, near-equal ranges (``num_shards`` or ``ceil(len /
    samples_per_shard)``). Iterable datasets keep their own input shards (files) when ``num_shards`` is None;
    otherwise row r goes to shard ``r % num_shards`` (each process then reads the whole stream). Either way the
    assignment depends only on the input order and the arguments.
    """
    if isinstance(dataset, datasets.IterableDataset):
        if num_shards is None:
            return ShardPlan(dataset, dataset.num_shards, input_shards=True)
        return ShardPlan(dataset, num_shards)
    return ShardPlan(dataset, num_shards or max(1, -(-len(dataset) // samples_per_shard)))


class _MapShard(torch.utils.data.Dataset):
    """A map-style shard's rows, prepared in DataLoader workers (order preserved by the DataLoader)."""

    def __init__(self, plan: ShardPlan, shard: int, cfg: PrepConfig):
        self.dataset, self.indices, self.cfg = plan.dataset, plan.indices(shard), cfg

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> PreparedSample | Skipped:
        index = self.indices[i]
        return prepare_sample(self.dataset[index], index, self.cfg)


class _StreamShard(torch.utils.data.IterableDataset):
    """An iterable dataset's shard, prepared in the main process (workers would each read the whole stream)."""

    def __init__(self, plan: ShardPlan, shard: int, cfg: PrepConfig):
        self.plan, self.shard, self.cfg = plan, shard, cfg

    def __iter__(self) -> Iterator[PreparedSample | Skipped]:
        return (prepare_sample(row, index, self.cfg) for index, row in self.plan.rows(self.shard))


def _prepared(plan: ShardPlan, shard: int, cfg: PrepConfig, batch_size: int,
              num_workers: int) -> Iterable[list[PreparedSample | Skipped]]:
    """Batches of prepared samples of one shard, in input order."""
    if isinstance(plan.dataset, datasets.Dataset):
        rows, workers = _MapShard(plan, shard, cfg), num_workers
    else:
        rows, workers = _StreamShard(plan, shard, cfg), 0
    return torch.utils.data.DataLoader(rows, batch_size=batch_size, num_workers=workers, collate_fn=list)


def _to_storage(x: torch.Tensor, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        x = x.to(torch.bfloat16).float()
    return x.numpy().astype(STORAGE_DTYPES[dtype])


def reinforce_batch(samples: list[PreparedSample], ensemble: TeacherEnsemble, captioner: Any,
                    num_synthetic_captions: int, seed: int, dtype: str) -> list[Record]:
    """The records of prepared samples: their synthetic captions (from the captioner, if any), ``image_emb``
    (K, D) and ``text_emb`` (1 + N, D)."""
    if not samples:
        return []
    syn = [s.syn_captions for s in samples]
    if captioner is not None:
        seeds = [seed_for_key(f"caption:{s.key}", seed) for s in samples]
        syn = captioner.caption([s.image for s in samples], num_synthetic_captions, seeds)
    syn = [list(c or []) for c in syn]
    views = {view: torch.cat([s.views[view] for s in samples]) for view in ensemble.views}
    image_emb = ensemble.embed_images(views).view(len(samples), -1, ensemble.dim)
    texts = [t for s, c in zip(samples, syn) for t in [s.caption, *c]]
    text_emb = ensemble.embed_texts(texts).view(len(samples), -1, ensemble.dim)
    return [s.to_record(c, _to_storage(img, dtype), _to_storage(txt, dtype))
            for s, c, img, txt in zip(samples, syn, image_emb, text_emb)]


def build_shard(shard: int, num_shards: int, batches: Iterable[list[PreparedSample | Skipped]],
                ensemble: TeacherEnsemble, captioner: Any, features: datasets.Features, output_dir: str,
                metadata: ReinforcementMetadata, progress: Any, max_skipped_fraction: float = 1.0) -> dict:
    """Reinforce one shard and write it atomically; returns the shard's report.

    Raises:
        BuildError: If more than ``max_skipped_fraction`` of the shard's rows are skipped (nothing is written).
    """
    records, skipped, examples, seen = [], Counter(), [], set()
    for batch in batches:
        good = []
        for sample in batch:
            if isinstance(sample, PreparedSample) and sample.key in seen:
                sample = Skipped(sample.key, "duplicate_key")
            if isinstance(sample, Skipped):
                skipped[sample.reason] += 1
                examples.append([sample.key, sample.reason, sample.detail])
                logger.info("skipping %s: %s %s", sample.key, sample.reason, sample.detail)
                continue
            seen.add(sample.key)
            good.append(sample)
        records += reinforce_batch(good, ensemble, captioner, metadata.num_synthetic_captions, metadata.seed,
                                   metadata.dtype)
        progress.update(len(batch))
    report = {"shard": shard, "rows_in": len(records) + sum(skipped.values()), "rows_out": len(records),
              "skipped": dict(skipped), "examples": examples[:100]}
    num_skipped = sum(skipped.values())
    if num_skipped > max_skipped_fraction * report["rows_in"]:
        raise BuildError(f"shard {shard}: {num_skipped} of {report['rows_in']} rows skipped ({dict(skipped)}, e.g. "
                         f"{examples[:3]}), more than max_skipped_fraction={max_skipped_fraction:g}; check the "
                         "column options and the input, or raise max_skipped_fraction to accept it")
    with atomic_path(shard_path(output_dir, shard, num_shards)) as tmp:
        pq.write_table(records_to_table(records, features), tmp)
        write_json(shard_report_path(output_dir, shard), report)  # before the shard: a done shard has its report
    return report


@dataclass(frozen=True)
class ModelInfo:
    """What the build settings need to know of the teachers and captioner, without the models themselves (the Ray
    engine's driver gets it from a worker that loaded them)."""

    teachers: tuple[TeacherInfo, ...]
    views: tuple[tuple[int, str], ...]  # TeacherEnsemble.views
    captioner: str | None  # its name

    @classmethod
    def of(cls, teachers: Sequence[Teacher], captioner: Any) -> "ModelInfo":
        ensemble = TeacherEnsemble(teachers)
        return cls(tuple(TeacherInfo(**t) for t in ensemble.metadata()), tuple(ensemble.views),
                   getattr(captioner, "name", None))


@dataclass(frozen=True)
class BuildJob:
    """One build's fixed settings: what a process needs to build any of its shards, whichever process that is.
    Holds no model (picklable: the Ray engine ships it to its workers)."""

    plan: ShardPlan
    output_dir: str
    metadata: ReinforcementMetadata
    features: datasets.Features
    cfg: PrepConfig
    batch_size: int
    num_workers: int
    max_skipped_fraction: float

    @property
    def num_shards(self) -> int:
        return self.plan.num_shards

    def is_done(self, shard: int) -> bool:
        """Whether ``shard`` is finished: its final file exists (it is renamed into place only once complete)."""
        return os.path.exists(shard_path(self.output_dir, shard, self.num_shards))

    def shard_report(self, shard: int) -> dict:
        """A finished shard's report (``build_shard``)."""
        with open(shard_report_path(self.output_dir, shard)) as f:
            return json.load(f)

    def remove_temporaries(self, shards: Iterable[int]) -> None:
        """Remove what an interrupted build left of ``shards``; only the process that hands them out may, since
        another one may be writing its own shards' temporaries right now."""
        for stale in _temporaries(self.output_dir, shards, self.num_shards):
            logger.info("removing %s, left by an interrupted build", stale)
            os.remove(stale)

    def build(self, shard: int, ensemble: TeacherEnsemble, captioner: Any, progress: Any) -> dict:
        """Build ``shard`` (``build_shard``) and return its report."""
        batches = _prepared(self.plan, shard, self.cfg, self.batch_size, self.num_workers)
        return build_shard(shard, self.num_shards, batches, ensemble, captioner, self.features, self.output_dir,
                           self.metadata, progress, self.max_skipped_fraction)


def _flat(settings: Any, prefix: str = "") -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``, to name the settings that differ."""
    if not isinstance(settings, dict) or not settings:
        return {prefix: settings}
    return {k: v for key, value in settings.items()
            for k, v in _flat(value, f"{prefix}.{key}" if prefix else key).items()}


def _temporaries(output_dir: str, shards: Iterable[int] | None, num_shards: int) -> list[str]:
    """Temporary files of a killed build: of ``shards``, or all of them (None)."""
    data, build = os.path.join(output_dir, DATA_DIR), os.path.dirname(settings_path(output_dir))
    if shards is None:
        return temporaries(data) + temporaries(build)
    return [path for s in shards for path in temporaries(data, SHARD_NAME.format(shard=s, num_shards=num_shards))
            + temporaries(build, os.path.basename(shard_report_path(output_dir, s)))]


def _check_fingerprint(output_dir: str, settings: dict) -> None:
    """Refuse to resume into a directory built with other settings (it would mix two datasets).

    Settings that no finished shard was built with are replaced (a failed first attempt must not block the folder).
    """
    path = settings_path(output_dir)
    settings = json.loads(json.dumps(settings))
    if os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        if old == settings:
            return
        new, old = _flat(settings), _flat(old)
        diff = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(new) | set(old))
                         if old.get(k) != new.get(k))
        if shard_files(output_dir):
            raise BuildError(f"{output_dir} was built with other settings ({diff}); use a new directory")
        logger.warning("%s has no finished shard: replacing its settings (%s)", output_dir, diff)
        for stale in _temporaries(output_dir, None, 0):
            os.remove(stale)
    write_json(path, settings)


def _check_arguments(**args: Any) -> None:
    """Integer and fraction arguments, checked before anything is read or written."""
    minimum = {"num_augmentations": 1, "num_synthetic_captions": 0, "samples_per_shard": 1, "batch_size": 1,
               "num_workers": 0, "aug_resolution": 1, "min_image_size": 1, "world_size": 1, "rank": 0}
    for name, low in minimum.items():
        value = args[name]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise BuildError(f"{name} must be an integer >= {low}, got {value!r}")
    if args["num_shards"] is not None and (not isinstance(args["num_shards"], (int, np.integer))
                                           or args["num_shards"] < 1):
        raise BuildError(f"num_shards must be None or an integer >= 1, got {args['num_shards']!r}")
    if args["rank"] >= args["world_size"]:
        raise BuildError(f"rank must be < world_size, got rank {args['rank']} of {args['world_size']}")
    if not 0 <= args["max_skipped_fraction"] <= 1:
        raise BuildError(f"max_skipped_fraction must be in [0, 1], got {args['max_skipped_fraction']!r}")


def build_reinforced_dataset(
    dataset: datasets.Dataset | datasets.IterableDataset,
    output_dir: str,
    teachers: Sequence[Teacher | str],
    captioner: Any = None,
    image_column: str = "image",
    caption_column: str = "caption",
    key_column: str | None = None,
    url_column: str | None = None,
    syn_captions_column: str | None = None,
    num_augmentations: int = 30,
    num_synthetic_captions: int = 5,
    seed: int = 0,
    num_shards: int | None = None,
    samples_per_shard: int = 1000,
    batch_size: int = 32,
    num_workers: int = 0,
    dtype: str = "float16",
    store_images: bool = True,
    aug_resolution: int = 224,
    crop_scale: Sequence[float] = RRC_SCALE,
    rand_augment_magnitude: int = MAGNITUDE,
    min_image_size: int = 2,
    source: str = "",
    license: str | None = None,
    input_options: dict | None = None,
    max_skipped_fraction: float = DEFAULT_MAX_SKIPPED_FRACTION,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    engine: RayEngine | None = None,
) -> dict | None:
    """Reinforce ``dataset`` into ``output_dir`` (layout and columns in the module docstring).

    Which process builds which shard is all that the engines change: by default this process builds shard i if
    ``i % world_size == rank`` (one process, or each rank of ``accelerate launch``); with ``engine=RayEngine(...)``
    the workers of a Ray cluster build them all (``ray_engine``). Either way the shard plan and the shards are the
    same, and finished shards are skipped, so rerunning an interrupted command resumes it. When this call saw every
    shard built (``world_size == 1``, or the Ray engine) the dataset card, ``reinforcement.json`` and
    ``report.json`` are written at the end and the report is returned; otherwise call ``finalize_dataset(output_dir)``
    once every process is done.

    Args:
        dataset: Input rows with an image column (``Image`` feature, bytes, path or PIL) and a caption column.
            Checked with ``check_input`` first.
        output_dir: Output folder (created).
        teachers: CLIP-style teachers; their order fixes the embedding layout. With the Ray engine also CLI specs
            (``load_teacher``), which every worker loads on its own device.
        captioner: Synthetic-caption generator (see ``captioner.py``), or None to read ``syn_captions_column`` (or
            to store no synthetic captions when that is None too, with ``num_synthetic_captions=0``). With the Ray
            engine also a CLI spec (``load_captioner``).
        image_column, caption_column, key_column, url_column, syn_captions_column: Input column names.
        num_augmentations: K stored augmentations per image.
        num_synthetic_captions: N synthetic captions per image.
        seed: Global seed of augmentations and caption sampling.
        num_shards, samples_per_shard: Output sharding (see ``plan_shards``).
        batch_size: Samples per teacher batch (each contributes K images and 1 + N texts).
        num_workers: DataLoader workers decoding and augmenting (map-style inputs), per shard-building process.
        dtype: ``float16``, ``float32`` or ``bfloat16`` (stored as float32).
        store_images: Store image bytes; False stores null and an ``image_ref`` column.
        aug_resolution: Resolution the augmentations are sampled at (DataCompDR: 224).
        crop_scale: RandomResizedCrop area range (DataCompDR: (0.08, 1)); small images may want a narrower one.
        rand_augment_magnitude: RandAugment magnitude bin, 0-30 (DataCompDR: 9); small images may want less.
        min_image_size: Images with a side shorter than this are skipped.
        source: Name of the input, stored in the metadata.
        license: Hub licence id of the result for its card (that of the source data, teachers and captioner).
        input_options: How ``dataset`` was read from ``source`` (split, config, data files, row limit...), JSON
            values; part of the resume fingerprint, so that a rerun reading other rows into the folder fails.
        max_skipped_fraction: A shard skipping more than this fraction of its rows (bad input, see
            ``samples.SKIP_REASONS``) fails the build and is not written; 1 accepts any. A build writing no row
            always fails.
        rank, world_size: This process and the number of processes (without ``engine``).
        progress: Show a tqdm bar (images/s; shards and samples/s with the Ray engine).
        engine: A ``ray_engine.RayEngine`` to build the shards on a Ray cluster, or None.

    Returns:
        The final report (``report.json``) when this call saw every shard built, else None.

    Raises:
        BuildError: Bad arguments or columns, settings that differ from those the folder's finished shards were
            built with, a shard over ``max_skipped_fraction``, or (when finalising) an empty build or duplicate keys;
            with the Ray engine also no Ray, an unreachable cluster, or a shard whose workers kept dying.
    """
    _check_arguments(num_augmentations=num_augmentations, num_synthetic_captions=num_synthetic_captions,
                     num_shards=num_shards, samples_per_shard=samples_per_shard, batch_size=batch_size,
                     num_workers=num_workers, aug_resolution=aug_resolution, min_image_size=min_image_size,
                     rank=rank, world_size=world_size, max_skipped_fraction=max_skipped_fraction)
    if not teachers:
        raise BuildError("at least one teacher is needed")
    if engine is None and any(isinstance(model, str) for model in (*teachers, captioner)):
        raise BuildError("teacher and captioner specs are loaded by the Ray engine's workers; for a build in this "
                         "process pass the models (load_teacher, load_captioner)")
    if engine is not None and world_size > 1:
        raise BuildError(f"the Ray engine dispatches every shard from one driver process, got world_size "
                         f"{world_size}: run it once (python -m dataset_builder, not accelerate launch)")
    if captioner is None and syn_captions_column is None and num_synthetic_captions:
        raise BuildError("no captioner and no syn_captions_column: pass one, or num_synthetic_captions=0")
    if captioner is not None and syn_captions_column is not None:  # the captioner's captions would replace them
        raise BuildError("syn_captions_column is read only without a captioner: pass one of them")
    if dtype not in STORAGE_DTYPES:
        raise BuildError(f"dtype must be one of {list(STORAGE_DTYPES)}")
    if len(crop_scale) != 2 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
        raise BuildError(f"crop_scale must be (min, max) with 0 < min <= max <= 1, got {crop_scale}")
    if not (isinstance(rand_augment_magnitude, int) and 0 <= rand_augment_magnitude < NUM_MAGNITUDE_BINS):
        raise BuildError(f"rand_augment_magnitude must be an integer bin in [0, {NUM_MAGNITUDE_BINS - 1}], "
                         f"got {rand_augment_magnitude}")
    check_input(dataset, image_column, caption_column, key_column, url_column, syn_captions_column)
    if isinstance(dataset.features, datasets.Features) and isinstance(dataset.features.get(image_column),
                                                                      datasets.Image):
        # Decode ourselves: a corrupt image must become a skipped row, not an exception inside the iterator.
        dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    columns = {"image_column": image_column, "caption_column": caption_column, "key_column": key_column,
               "url_column": url_column, "syn_captions_column": syn_captions_column}
    # What was read: another split, filter or file list gives other rows under the same source name.
    input_fingerprint = {
        "kind": "iterable" if isinstance(dataset, datasets.IterableDataset) else "map",
        "num_rows": None if isinstance(dataset, datasets.IterableDataset) else len(dataset),
        "first_row": _row_digest(_first_row(dataset), list(columns.values()), image_column),
        "columns": columns, **(input_options or {}),
    }
    plan = plan_shards(dataset, num_shards, samples_per_shard)

    def setup(models: ModelInfo) -> BuildJob:
        """The build's metadata and settings once the models are known; checks the folder's fingerprint."""
        metadata = ReinforcementMetadata(
            num_augmentations=num_augmentations, num_synthetic_captions=num_synthetic_captions,
            teachers=models.teachers, dtype=dtype,
            augmentation=AugmentationInfo(scale=tuple(crop_scale), magnitude=rand_augment_magnitude,
                                          teacher_resolution=aug_resolution),
            seed=seed, source=source,
            captioner=models.captioner or (f"column {syn_captions_column!r}" if syn_captions_column else None),
            license=license)
        settings = {"metadata": metadata.to_dict(), "num_shards": plan.num_shards, "store_images": store_images,
                    "min_image_size": min_image_size, "captioner": models.captioner,
                    "syn_captions_column": syn_captions_column, "key_column": key_column, "input": input_fingerprint}
        os.makedirs(os.path.join(output_dir, DATA_DIR), exist_ok=True)
        _check_fingerprint(output_dir, settings)
        cfg = PrepConfig(image_column=image_column, caption_column=caption_column, views=models.views,
                         num_augmentations=num_augmentations, seed=seed, aug_resolution=aug_resolution,
                         crop_scale=tuple(crop_scale), rand_augment_magnitude=rand_augment_magnitude,
                         key_column=key_column, url_column=url_column, syn_captions_column=syn_captions_column,
                         num_synthetic_captions=num_synthetic_captions, min_image_size=min_image_size,
                         keep_pil=captioner is not None, source=source)
        return BuildJob(plan, output_dir, metadata, metadata.features(store_images), cfg, batch_size, num_workers,
                        max_skipped_fraction)

    if engine is None:
        _build_here(setup(ModelInfo.of(teachers, captioner)), teachers, captioner, rank, world_size, progress)
    else:
        engine.run(setup, teachers, captioner, num_loader_workers=num_workers, progress=progress)
    return finalize_dataset(output_dir) if engine is not None or world_size == 1 else None


def _build_here(job: BuildJob, teachers: Sequence[Teacher], captioner: Any, rank: int, world_size: int,
                progress: bool) -> None:
    """Build this process's unfinished shards: shard i is rank ``i % world_size``'s."""
    mine = range(rank, job.num_shards, world_size)
    job.remove_temporaries(mine)
    todo = [s for s in mine if not job.is_done(s)]
    ensemble = TeacherEnsemble(teachers, job.cfg.aug_resolution)
    with tqdm(desc=f"rank {rank}: {len(todo)} shards", unit="img", disable=not progress) as bar:
        for shard in todo:
            job.build(shard, ensemble, captioner, bar)


__all__ = ["DEFAULT_MAX_SKIPPED_FRACTION", "BuildError", "BuildJob", "ModelInfo", "ShardPlan",
           "build_reinforced_dataset", "build_shard", "check_input", "plan_shards", "reinforce_batch"]
