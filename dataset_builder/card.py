"""Features, dataset card, metadata and final report of a reinforced dataset (layout: see ``builder.py``)."""

from __future__ import annotations

import glob
import json
import os
from collections import Counter
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from datasets import Features, List, Value

SHARD_NAME = "train-{shard:05d}-of-{num_shards:05d}.parquet"
CARD_TEMPLATE = """---
{yaml}---

# Reinforced dataset

Built with `dataset_builder` (MobileCLIP multi-modal dataset reinforcement, DataCompDR recipe) from `{source}`.

* {rows} samples in {num_shards} parquet shards, {bytes_per_sample:.0f} bytes per sample.
* {k} stored augmentations per image (`aug_params`, DataCompDR's compressed form) with their teacher embeddings
  (`image_emb`, {k} x {dim}); the real caption and {n} synthetic captions with theirs (`text_emb`, {n1} x {dim}).
* Teachers (embedding slices in this order, each L2-normalised): {teachers}.
* Synthetic captions: {captioner}.
* Augmentations: RandomResizedCrop scale {scale}, RandAugment ({num_ops} ops, magnitude {magnitude}) sampled at
  {resolution} px; seed {seed}.
* Licence: {license}.

```python
from datasets import load_dataset
ds = load_dataset("path/to/this/folder", split="train", streaming=True)
```

`datasets` caches a local folder by its name and card, not by file contents: after rebuilding into the same folder,
load it with `download_mode="force_redownload"` (streaming is not cached).

Metadata (`reinforcement.json`):

```json
{metadata}
```
"""


class BuildError(ValueError):
    """The build cannot go on: bad arguments or input columns, a resume into a folder built from other settings or
    input, a shard skipping too many rows, duplicate keys or an empty result. Nothing is finalised."""


class MissingShardsError(RuntimeError):
    """Some shards are not built yet (another process is still working, or a build was interrupted)."""


def shard_path(output_dir: str, shard: int, num_shards: int) -> str:
    return os.path.join(output_dir, "data", SHARD_NAME.format(shard=shard, num_shards=num_shards))


def settings_path(output_dir: str) -> str:
    return os.path.join(output_dir, ".build", "settings.json")


def write_json(path: str, obj: Any) -> None:
    """Write JSON atomically (temporary file, then ``os.replace``), so a kill never leaves half a file."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def reinforced_features(num_augmentations: int, num_synthetic_captions: int, dim: int, dtype: str = "float16",
                        store_images: bool = True) -> Features:
    """The output ``Features`` (bfloat16 values are stored as float32)."""
    value = Value("float16" if dtype == "float16" else "float32")
    features = {
        "key": Value("string"),
        "image": datasets.Image(),
        "caption": Value("string"),
        # Arrow aborts on fixed-size lists of length 0 (pyarrow 25/26), so N = 0 uses a variable-length list.
        "syn_captions": List(Value("string"), length=num_synthetic_captions or -1),
        "aug_params": Value("string"),
        "image_emb": List(List(value, length=dim), length=num_augmentations),
        "text_emb": List(List(value, length=dim), length=1 + num_synthetic_captions),
    }
    if not store_images:
        features["image_ref"] = Value("string")
    return Features(features)


def storage_report(output_dir: str) -> dict:
    """Bytes on disk per sample, total and per column (compressed parquet column chunks)."""
    rows, total, per_column = 0, 0, Counter()
    for path in sorted(glob.glob(os.path.join(output_dir, "data", "train-*.parquet"))):
        meta = pq.ParquetFile(path).metadata
        rows += meta.num_rows
        total += os.path.getsize(path)
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                per_column[column.path_in_schema.split(".")[0]] += column.total_compressed_size
    scale = 1 / max(rows, 1)
    return {"rows": rows, "total_bytes": total, "bytes_per_sample": total * scale,
            "bytes_per_sample_per_column": {k: v * scale for k, v in sorted(per_column.items())}}


def write_card(output_dir: str, features: Features, metadata: dict, storage: dict, num_shards: int) -> None:
    """README.md with YAML ``configs``/``dataset_info`` (what ``load_dataset(dir)`` reads) and the metadata."""
    header = {
        "configs": [{"config_name": "default", "default": True,
                     "data_files": [{"split": "train", "path": "data/train-*.parquet"}]}],
        "dataset_info": {"features": features._to_yaml_list()},
        "tags": ["mobileclip", "dataset-reinforcement"],
        "reinforcement": metadata,
    }
    if metadata.get("license"):
        header = {"license": metadata["license"], **header}
    teachers = ", ".join(f"`{t['name']}` ({t['dim']}, logit scale {t['logit_scale']:g})" for t in metadata["teachers"])
    augmentation = metadata["augmentation"]
    text = CARD_TEMPLATE.format(
        yaml=yaml.safe_dump(header, sort_keys=False), source=metadata["source"], rows=storage["rows"],
        num_shards=num_shards, bytes_per_sample=storage["bytes_per_sample"], k=metadata["num_augmentations"],
        n=metadata["num_synthetic_captions"], n1=1 + metadata["num_synthetic_captions"],
        dim=metadata["embedding_dim"], teachers=teachers, metadata=json.dumps(metadata, indent=2),
        captioner=metadata.get("captioner") or "none", scale=augmentation["scale"], num_ops=augmentation["num_ops"],
        magnitude=augmentation["magnitude"], resolution=augmentation["teacher_resolution"], seed=metadata["seed"],
        license=metadata.get("license") or f"not stated: that of `{metadata['source']}`, its teachers and captioner")
    with open(os.path.join(output_dir, "README.md"), "w") as f:
        f.write(text)


def duplicate_key(output_dir: str, num_shards: int) -> tuple[str, list[int]] | None:
    """A key stored more than once, and the shards holding it (each shard is deduplicated while it is built, but
    no process sees the other shards' keys until all are done); None if keys are unique."""
    paths = [shard_path(output_dir, s, num_shards) for s in range(num_shards)]
    columns = [pq.read_table(p, columns=["key"]).column("key") for p in paths]
    keys = pa.chunked_array([chunk for column in columns for chunk in column.chunks], pa.string())
    counts = pc.value_counts(keys)
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if not len(repeated):
        return None
    key = repeated.field("values")[0].as_py()
    return key, [s for s, column in enumerate(columns) if pc.any(pc.equal(column, key)).as_py()]


def finalize_dataset(output_dir: str) -> dict:
    """Write ``reinforcement.json``, ``report.json`` and ``README.md`` once every shard exists; return the report.

    Reads the build settings from ``.build/settings.json``, so any process (or a later call) can do it.

    Raises:
        MissingShardsError: If shards are missing (some process has not finished).
        BuildError: If no row was written, or a key is stored in two shards (which copy is the sample is
            arbitrary, and dropping one would hide a key column that is not unique); nothing is written then.
    """
    with open(settings_path(output_dir)) as f:
        settings = json.load(f)
    metadata, num_shards = settings["metadata"], settings["num_shards"]
    features = reinforced_features(metadata["num_augmentations"], metadata["num_synthetic_captions"],
                                   metadata["embedding_dim"], metadata["dtype"], settings["store_images"])
    missing = [s for s in range(num_shards) if not os.path.exists(shard_path(output_dir, s, num_shards))]
    if missing:
        raise MissingShardsError(f"{len(missing)} shards are not built yet, e.g. {missing[:5]}")
    skipped, rows_in, examples = Counter(), 0, []
    for s in range(num_shards):
        with open(os.path.join(output_dir, ".build", f"shard-{s:05d}.json")) as f:
            shard = json.load(f)
        skipped.update(shard["skipped"])
        rows_in += shard["rows_in"]
        examples += shard["examples"]
    storage = storage_report(output_dir)
    if not storage["rows"]:
        raise BuildError(f"{output_dir}: no row was written ({rows_in} read, skipped: {dict(skipped) or 'none'}, "
                         f"e.g. {examples[:3]}); not finalising an empty dataset")
    duplicate = duplicate_key(output_dir, num_shards)
    if duplicate:
        key, shards = duplicate
        raise BuildError(f"{output_dir}: key {key!r} is stored in shards {shards}; keys must be unique: use a unique "
                         "key column (or none: the row index) and a new directory")
    for path in glob.glob(os.path.join(output_dir, "*.json.tmp-*")):  # left by a killed finalize
        os.remove(path)
    report = {"rows_in": rows_in, "rows_out": storage["rows"], "skipped": dict(sorted(skipped.items())),
              "num_skipped": sum(skipped.values()), "skipped_examples": examples[:1000], "storage": storage}
    write_json(os.path.join(output_dir, "reinforcement.json"), metadata)
    write_json(os.path.join(output_dir, "report.json"), report)
    write_card(output_dir, features, metadata, storage, num_shards)
    return report


__all__ = [
    "SHARD_NAME",
    "BuildError",
    "MissingShardsError",
    "duplicate_key",
    "finalize_dataset",
    "reinforced_features",
    "settings_path",
    "shard_path",
    "storage_report",
    "write_card",
    "write_json",
]
