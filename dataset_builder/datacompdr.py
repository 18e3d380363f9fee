"""Read and write Apple's DataCompDR webdataset layout, as the builder's column schema (see ``schema.py``).

One tar per shard; per sample ``{key}.<ext>`` members (DataCompDR-12M / -1B on the Hub)::

    url.txt    image URL                      txt        real caption (after joining with DataComp)
    syn.json   {"syn_text": [N strings]}      paug.json  {"param_aug": [K compressed augmentations]}
    npz        image_emb (K, D) float32, text_emb (1 + N, D) float32 (real caption first)
    pth.gz     the same as a gzipped torch.save dict of bfloat16 tensors (DataCompDR-12M-bf16)
    json       {"uid", "sha256"}              jpg/png/webp  image bytes (only once joined with downloaded images)

Mapping to our columns: ``key`` = ``json["uid"]`` (the tar key when absent), ``image`` = the image member or null,
``image_ref`` = ``url.txt``, ``caption`` = ``txt``, ``syn_captions`` = ``syn.json[syn_key]``, ``aug_params`` =
JSON of ``paug.json["param_aug"]``, ``image_emb`` / ``text_emb`` from ``npz`` or ``pth.gz``. Writing goes the other
way; our ``key`` becomes ``json["uid"]`` and the tar key is ``{shard:08d}{row:06d}`` (webdataset keys cannot hold
dots, which our keys may).
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import os
import tarfile
from typing import Any, Iterator, Sequence

import datasets
import fsspec
import numpy as np
import pyarrow.parquet as pq
import torch

from modeling_mobileclip.atomic import atomic_path

from .samples import image_bytes
from .schema import Record, records_from_table, reinforced_features, shard_files

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
_FORMAT_TO_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
# The arrays of DataCompDR's npz / pth.gz member (Apple's names, which our embedding columns took over).
IMAGE_ARRAY, TEXT_ARRAY = "image_emb", "text_emb"


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (bytes, str)) else value


def _text(value: Any) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _embeddings(sample: dict) -> tuple[np.ndarray, np.ndarray]:
    if sample.get("npz") is not None:
        value = sample["npz"]
        arrays = np.load(io.BytesIO(value)) if isinstance(value, bytes) else value
        return np.asarray(arrays[IMAGE_ARRAY]), np.asarray(arrays[TEXT_ARRAY])
    value = torch.load(io.BytesIO(gzip.decompress(sample["pth.gz"])), map_location="cpu", weights_only=True)
    return value[IMAGE_ARRAY].float().numpy(), value[TEXT_ARRAY].float().numpy()


def datacompdr_record(sample: dict, syn_key: str = "syn_text", dtype: str = "float16") -> Record:
    """Convert one DataCompDR sample (raw member bytes, or values decoded by datasets' webdataset loader; member
    names without the key, e.g. ``"paug.json"``) to a record."""
    meta = _json(sample.get("json")) or {}
    ext = next((e for e in IMAGE_EXTENSIONS if sample.get(e) is not None), None)
    image_emb, text_emb = _embeddings(sample)
    storage = np.float16 if dtype == "float16" else np.float32
    return Record(key=str(meta.get("uid") or sample.get("__key__")), caption=_text(sample.get("txt")),
                  syn_captions=list(_json(sample["syn.json"])[syn_key]),
                  aug_params=_json(sample["paug.json"])["param_aug"], image_emb=image_emb.astype(storage),
                  text_emb=text_emb.astype(storage), image_bytes=image_bytes(sample[ext]) if ext else None,
                  image_ref=_text(sample.get("url.txt")))


def datacompdr_to_row(sample: dict, syn_key: str = "syn_text", dtype: str = "float16") -> dict:
    """``datacompdr_record`` as a row of our schema with ``image_ref`` (``reinforced_features(...,
    store_images=False)``)."""
    return datacompdr_record(sample, syn_key, dtype).to_row()


def iter_tar(path: str) -> Iterator[dict]:
    """Samples of a webdataset tar as ``{"__key__": key, ext: bytes, ...}``, in tar order.

    ``path`` is anything fsspec opens (a local file, ``hf://datasets/...``), read as a stream.
    """
    sample: dict = {}
    with fsspec.open(path, "rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = os.path.basename(member.name).partition(".")
            if sample and key != sample["__key__"]:
                yield sample
                sample = {}
            sample["__key__"] = key
            sample[ext] = tar.extractfile(member).read()
    if sample:
        yield sample


def _generate(tars: Sequence[str], syn_key: str, dtype: str) -> Iterator[dict]:
    for path in tars:
        for sample in iter_tar(path):
            yield datacompdr_to_row(sample, syn_key, dtype)


def load_datacompdr(path: str | Sequence[str], streaming: bool = False, syn_key: str = "syn_text",
                    dtype: str = "float16") -> datasets.Dataset | datasets.IterableDataset:
    """Read local DataCompDR tars (a folder, a glob or a list) as our schema (with ``image_ref``).

    Streaming datasets have one shard per tar, so ``split_dataset_by_node`` and DataLoader workers split by file.
    """
    if isinstance(path, str):
        tars = sorted(glob.glob(os.path.join(path, "*.tar")) if os.path.isdir(path) else glob.glob(path))
    else:
        tars = list(path)
    if not tars:
        raise FileNotFoundError(f"no tar files in {path}")
    first = datacompdr_record(next(iter_tar(tars[0])), syn_key, dtype)
    k, dim = first.image_emb.shape
    features = reinforced_features(k, len(first.syn_captions), dim, dtype, store_images=False)
    kwargs = {"gen_kwargs": {"tars": tars, "syn_key": syn_key, "dtype": dtype}, "features": features}
    if streaming:
        return datasets.IterableDataset.from_generator(_generate, **kwargs)
    return datasets.Dataset.from_generator(_generate, **kwargs)


def stream_datacompdr_from_hub(repo_id: str = "apple/DataCompDR-12M", syn_key: str = "syn_text",
                               dtype: str = "float16", revision: str | None = None) -> datasets.IterableDataset:
    """Stream a DataCompDR-layout dataset repo (webdataset tars) from the Hub, converted to our schema, one shard per
    tar (so ``split_dataset_by_node`` and DataLoader workers split by file).

    Read with our own tar reader rather than datasets' webdataset loader: that one infers an Arrow type from the first
    sample's ``paug.json`` (whose lists mix a crop box with ``[op, magnitude]`` pairs, which Arrow cannot type) and
    requires every sample to have the same members (images are named by their format).
    """
    from huggingface_hub import HfFileSystem

    root = f"datasets/{repo_id}" + (f"@{revision}" if revision else "")
    tars = sorted(HfFileSystem().glob(f"{root}/**/*.tar"))
    if not tars:
        raise FileNotFoundError(f"no .tar files in the dataset repo {repo_id!r}" + (f" at {revision}" if revision
                                                                                    else ""))
    return load_datacompdr([f"hf://{t}" for t in tars], streaming=True, syn_key=syn_key, dtype=dtype)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0  # fixed mtime: the same rows give byte-identical tars
    tar.addfile(info, io.BytesIO(data))


def _sample_members(record: Record, embedding_format: str) -> dict:
    image = record.image_bytes
    members = {"url.txt": (record.image_ref or "").encode(), "txt": (record.caption or "").encode(),
               "syn.json": json.dumps({"syn_text": list(record.syn_captions)}).encode(),
               "paug.json": json.dumps({"param_aug": record.aug_params}).encode(),
               "json": json.dumps({"uid": record.key,
                                   "sha256": hashlib.sha256(image).hexdigest() if image else None}).encode()}
    embeddings = {IMAGE_ARRAY: record.image_emb.astype(np.float32), TEXT_ARRAY: record.text_emb.astype(np.float32)}
    buf = io.BytesIO()
    if embedding_format == "npz":
        np.savez(buf, **embeddings)
    else:
        torch.save({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in embeddings.items()}, buf)
        buf = io.BytesIO(gzip.compress(buf.getvalue(), mtime=0))
    members[embedding_format] = buf.getvalue()
    if image:
        from PIL import Image

        members[_FORMAT_TO_EXT.get(Image.open(io.BytesIO(image)).format, "png")] = image
    return members


def write_datacompdr(reinforced_dir: str, output_dir: str, embedding_format: str = "npz") -> list[str]:
    """Write a reinforced dataset (our parquet layout) as DataCompDR tars, one ``{shard:08d}.tar`` per parquet shard.

    Args:
        reinforced_dir: Output folder of ``build_reinforced_dataset``.
        output_dir: Where the tars go.
        embedding_format: ``"npz"`` (float32, DataCompDR-12M) or ``"pth.gz"`` (bfloat16, DataCompDR-12M-bf16).

    Returns:
        The tar paths.
    """
    if embedding_format not in ("npz", "pth.gz"):
        raise ValueError("embedding_format must be 'npz' or 'pth.gz'")
    os.makedirs(output_dir, exist_ok=True)
    paths = []
    for shard, parquet in enumerate(shard_files(reinforced_dir)):
        path = os.path.join(output_dir, f"{shard:08d}.tar")
        with atomic_path(path) as tmp, tarfile.open(tmp, "w") as tar:
            for j, record in enumerate(records_from_table(pq.read_table(parquet))):
                for ext, data in _sample_members(record, embedding_format).items():
                    _add(tar, f"{shard:08d}{j:06d}.{ext}", data)
        paths.append(path)
    return paths


__all__ = ["datacompdr_record", "datacompdr_to_row", "iter_tar", "load_datacompdr", "stream_datacompdr_from_hub",
           "write_datacompdr"]
