"""Dataset card, final report and finalisation of a reinforced dataset (layout: see ``builder.py``, columns and
metadata: ``schema.py``)."""

from __future__ import annotations

import json
import os
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import yaml
from datasets import Features

from modeling_mobileclip.atomic import atomic_path, temporaries, write_json

from .schema import (
    AUG_PARAMS,
    DATA_FILES,
    IMAGE_EMB,
    KEY,
    METADATA_FILE,
    TEXT_EMB,
    ReinforcementMetadata,
    shard_files,
    shard_path,
)

CARD_TEMPLATE = """---
{yaml}---

# Reinforced dataset

Built with `dataset_builder` (MobileCLIP multi-modal dataset reinforcement, DataCompDR recipe) from `{source}`.

* {rows} samples in {num_shards} parquet shards, {bytes_per_sample:.0f} bytes per sample.
* {k} stored augmentations per image (`{aug_params}`, DataCompDR's compressed form) with their teacher embeddings
  (`{image_emb}`, {k} x {dim}); the real caption and {n} synthetic captions with theirs (`{text_emb}`, {n1} x {dim}).
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

Metadata (`{metadata_file}`):

```json
{metadata}
```
"""


class BuildError(ValueError):
    """The build cannot go on: bad arguments or input columns, a resume into a folder built from other settings or
    input, a shard skipping too many rows, duplicate keys or an empty result. Nothing is finalised."""


class MissingShardsError(RuntimeError):
    """Some shards are not built yet (another process is still working, or a build was interrupted)."""


def settings_path(output_dir: str) -> str:
    return os.path.join(output_dir, ".build", "settings.json")


def shard_report_path(output_dir: str, shard: int) -> str:
    """A finished shard's report (rows in and out, skipped rows), merged into ``report.json`` by finalisation."""
    return os.path.join(output_dir, ".build", f"shard-{shard:05d}.json")


def storage_report(output_dir: str) -> dict:
    """Bytes on disk per sample, total and per column (compressed parquet column chunks)."""
    rows, total, per_column = 0, 0, Counter()
    for path in shard_files(output_dir):
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


def write_card(output_dir: str, metadata: ReinforcementMetadata, features: Features, storage: dict,
               num_shards: int) -> None:
    """README.md with YAML ``configs``/``dataset_info`` (what ``load_dataset(dir)`` reads) and the metadata."""
    meta = metadata.to_dict()
    header = {
        "configs": [{"config_name": "default", "default": True,
                     "data_files": [{"split": "train", "path": DATA_FILES}]}],
        "dataset_info": {"features": features._to_yaml_list()},
        "tags": ["mobileclip", "dataset-reinforcement"],
        "reinforcement": meta,
    }
    if metadata.license:
        header = {"license": metadata.license, **header}
    teachers = ", ".join(f"`{t.name}` ({t.dim}, logit scale {t.logit_scale:g})" for t in metadata.teachers)
    augmentation = metadata.augmentation
    text = CARD_TEMPLATE.format(
        yaml=yaml.safe_dump(header, sort_keys=False), source=metadata.source, rows=storage["rows"],
        num_shards=num_shards, bytes_per_sample=storage["bytes_per_sample"], k=metadata.num_augmentations,
        n=metadata.num_synthetic_captions, n1=1 + metadata.num_synthetic_captions, dim=metadata.embedding_dim,
        teachers=teachers, metadata=json.dumps(meta, indent=2), metadata_file=METADATA_FILE,
        aug_params=AUG_PARAMS, image_emb=IMAGE_EMB, text_emb=TEXT_EMB, captioner=metadata.captioner or "none",
        scale=list(augmentation.scale), num_ops=augmentation.num_ops, magnitude=augmentation.magnitude,
        resolution=augmentation.teacher_resolution, seed=metadata.seed,
        license=metadata.license or f"not stated: that of `{metadata.source}`, its teachers and captioner")
    with atomic_path(os.path.join(output_dir, "README.md")) as tmp, open(tmp, "w") as f:
        f.write(text)


def duplicate_key(output_dir: str, num_shards: int) -> tuple[str, list[int]] | None:
    """A key stored more than once, and the shards holding it (each shard is deduplicated while it is built, but
    no process sees the other shards' keys until all are done); None if keys are unique."""
    paths = [shard_path(output_dir, s, num_shards) for s in range(num_shards)]
    columns = [pq.read_table(p, columns=[KEY]).column(KEY) for p in paths]
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
    metadata = ReinforcementMetadata.from_dict(settings["metadata"], settings_path(output_dir))
    num_shards, features = settings["num_shards"], metadata.features(settings["store_images"])
    missing = [s for s in range(num_shards) if not os.path.exists(shard_path(output_dir, s, num_shards))]
    if missing:
        raise MissingShardsError(f"{len(missing)} shards are not built yet, e.g. {missing[:5]}")
    skipped, rows_in, examples = Counter(), 0, []
    for s in range(num_shards):
        with open(shard_report_path(output_dir, s)) as f:
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
    for path in temporaries(output_dir):  # left by a killed finalize
        os.remove(path)
    report = {"rows_in": rows_in, "rows_out": storage["rows"], "skipped": dict(sorted(skipped.items())),
              "num_skipped": sum(skipped.values()), "skipped_examples": examples[:1000], "storage": storage}
    metadata.save(output_dir)
    write_json(os.path.join(output_dir, "report.json"), report)
    write_card(output_dir, metadata, features, storage, num_shards)
    return report


__all__ = [
    "BuildError",
    "MissingShardsError",
    "duplicate_key",
    "finalize_dataset",
    "settings_path",
    "shard_report_path",
    "storage_report",
    "write_card",
]
