"""End-to-end tests of the reinforced-dataset builder with tiny random teachers and captioner (CPU, offline)."""

import json
import os

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from datasets.distributed import split_dataset_by_node

from dataset_builder import builder as builder_module
from dataset_builder.builder import build_reinforced_dataset
from dataset_builder.card import finalize_dataset
from dataset_builder.teachers import replay_for_teacher

from reinforce_fixtures import EXPECTED_SKIPS, load_local, messy_dataset, tiny_captioner, tiny_teachers

K, N = 3, 2
GOOD_KEYS = ["u00", "u01", "u03", "u04", "u05", "u07", "u10", "u12", "u13"]


@pytest.fixture(scope="module")
def models():
    return tiny_teachers(), tiny_captioner()


def build(models, output_dir, **kwargs):
    teachers, captioner = models
    options = dict(captioner=captioner, key_column="uid", num_augmentations=K, num_synthetic_captions=N,
                   num_shards=3, batch_size=2, seed=7, source="messy", progress=False)
    return build_reinforced_dataset(kwargs.pop("dataset", None) or messy_dataset(), str(output_dir), teachers,
                                    **{**options, **kwargs})


@pytest.fixture(scope="module")
def built(models, tmp_path_factory):
    """The reference build: 3 shards, no workers."""
    output_dir = tmp_path_factory.mktemp("reinforced")
    return output_dir, build(models, output_dir)


def read_rows(output_dir, **kwargs):
    rows = list(load_local(output_dir, **kwargs))
    return sorted(rows, key=lambda r: r["key"])


def test_schema_shapes_and_metadata(built, models):
    output_dir, report = built
    ds = load_local(output_dir)
    dim = 24 + 16
    assert list(ds.features) == ["key", "image", "caption", "syn_captions", "aug_params", "image_emb", "text_emb"]
    assert ds.features["image_emb"] == datasets.List(datasets.List(datasets.Value("float16"), length=dim), length=K)
    assert ds.features["text_emb"] == datasets.List(datasets.List(datasets.Value("float16"), length=dim), length=1 + N)
    assert ds.features["syn_captions"] == datasets.List(datasets.Value("string"), length=N)
    assert sorted(ds["key"]) == GOOD_KEYS
    assert sorted(os.listdir(output_dir / "data")) == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    row = ds.with_format("numpy")[0]
    assert row["image_emb"].shape == (K, dim) and row["text_emb"].shape == (1 + N, dim)
    assert len(json.loads(ds[0]["aug_params"])) == K
    meta = json.loads((output_dir / "reinforcement.json").read_text())
    assert meta["teachers"] == [t.metadata() for t in models[0]] and meta["embedding_dim"] == dim
    assert meta["num_augmentations"] == K and meta["num_synthetic_captions"] == N and meta["dtype"] == "float16"
    assert meta["augmentation"]["teacher_resolution"] == 224 and meta["seed"] == 7
    assert meta["augmentation"]["scale"] == [0.08, 1.0]  # DataCompDR's RandomResizedCrop unless crop_scale is given
    card = (output_dir / "README.md").read_text()
    assert "data/train-*.parquet" in card and '"embedding_dim": 40' in card
    assert meta["captioner"] == models[1].name and f"Synthetic captions: {models[1].name}." in card
    assert "RandAugment (2 ops, magnitude 9) sampled at\n  224 px; seed 7" in card
    assert "Licence: not stated: that of `messy`" in card and meta["license"] is None
    assert report["storage"]["bytes_per_sample"] > 0


def test_per_teacher_normalisation(built):
    output_dir, _ = built
    ds = load_local(output_dir).with_format("numpy")
    for column in ("image_emb", "text_emb"):
        emb = np.stack(ds[column]).astype(np.float32)
        for start, stop in ((0, 24), (24, 40)):
            np.testing.assert_allclose(np.linalg.norm(emb[..., start:stop], axis=-1), 1.0, atol=2e-3)


def test_bad_input_report(built):
    output_dir, report = built
    assert report["skipped"] == EXPECTED_SKIPS
    assert report["rows_in"] == 14 and report["rows_out"] == 9
    assert json.loads((output_dir / "report.json").read_text())["skipped"] == EXPECTED_SKIPS
    rows = {r["key"]: r for r in read_rows(output_dir)}
    assert rows["u01"]["caption"] == "a dog on the table"  # whitespace normalised
    assert rows["u07"]["image"].size == (3, 3)  # small but valid: kept
    assert rows["u05"]["image"].mode == "CMYK"  # source bytes kept; readers convert to RGB
    assert rows["u10"]["image"].format == "PNG"  # GIF re-encoded losslessly


def test_same_rows_whatever_the_sharding(built, models, tmp_path):
    reference = read_rows(built[0])
    build(models, tmp_path, num_shards=1, batch_size=3, num_workers=2)
    other = read_rows(tmp_path)
    for a, b in zip(reference, other, strict=True):
        for column in ("key", "caption", "syn_captions", "aug_params"):
            assert a[column] == b[column]
        assert a["image"].tobytes() == b["image"].tobytes()
        # Different batch compositions may round differently in the last float16 bit.
        np.testing.assert_allclose(np.array(a["image_emb"]), np.array(b["image_emb"]), atol=2e-3)
        np.testing.assert_allclose(np.array(a["text_emb"]), np.array(b["text_emb"]), atol=2e-3)


def test_processes_split_shards(built, models, tmp_path):
    """Shard i goes to rank i % world: two ranks run one after the other give the single-process dataset."""
    assert build(models, tmp_path, rank=1, world_size=2) is None
    assert sorted(os.listdir(tmp_path / "data")) == ["train-00001-of-00003.parquet"]
    with pytest.raises(RuntimeError, match="not built yet"):
        finalize_dataset(str(tmp_path))
    build(models, tmp_path, rank=0, world_size=2)
    report = finalize_dataset(str(tmp_path))
    assert report["skipped"] == EXPECTED_SKIPS
    for shard in range(3):
        name = f"train-{shard:05d}-of-00003.parquet"
        assert pq.read_table(tmp_path / "data" / name).equals(pq.read_table(built[0] / "data" / name))


def test_resume_after_kill_is_exact(built, models, tmp_path, monkeypatch):
    real, calls = builder_module.reinforce_batch, []

    def dying(samples, *args, **kwargs):
        calls.append(len(samples))
        if len(calls) == 6:  # shards 0 and 1 take two batches each: this is the middle of shard 2
            raise KeyboardInterrupt("simulated kill")
        return real(samples, *args, **kwargs)

    monkeypatch.setattr(builder_module, "reinforce_batch", dying)
    with pytest.raises(KeyboardInterrupt):
        build(models, tmp_path)
    data = tmp_path / "data"
    assert sorted(os.listdir(data)) == ["train-00000-of-00003.parquet", "train-00001-of-00003.parquet"]
    assert not (tmp_path / "README.md").exists()
    mtimes = {p: os.path.getmtime(data / p) for p in os.listdir(data)}
    monkeypatch.setattr(builder_module, "reinforce_batch", real)
    build(models, tmp_path)
    assert all(os.path.getmtime(data / p) == t for p, t in mtimes.items())  # finished shards were kept
    for shard in range(3):
        name = f"train-{shard:05d}-of-00003.parquet"
        assert pq.read_table(data / name).equals(pq.read_table(built[0] / "data" / name))
    with pytest.raises(ValueError, match="other settings"):
        build(models, tmp_path, seed=8)
    with pytest.raises(ValueError, match="other settings"):  # other crops: another dataset
        build(models, tmp_path, crop_scale=(0.5, 1.0))
    with pytest.raises(ValueError, match=r"crop_scale must be \(min, max\) with 0 < min <= max <= 1"):
        build(models, tmp_path / "bad", crop_scale=(0.5, 0.2))


def test_streaming_and_split_by_node(built):
    output_dir, _ = built
    stream = load_local(output_dir, streaming=True)
    assert stream.num_shards == 3
    assert sorted(r["key"] for r in stream) == GOOD_KEYS
    per_rank = [[r["key"] for r in split_dataset_by_node(stream, rank, 3)] for rank in range(3)]
    assert sorted(sum(per_rank, [])) == GOOD_KEYS and all(per_rank)


def test_stored_params_replay_to_stored_embedding(built, models):
    teachers, _ = models
    row = read_rows(built[0])[0]
    image = row["image"].convert("RGB")
    params = json.loads(row["aug_params"])
    for k in range(K):
        start = 0
        for teacher in teachers:
            pixels = replay_for_teacher(image, params[k], teacher.image_size, 224, teacher.interpolation)
            expected = teacher.embed_images(pixels[None])[0]
            stored = torch.tensor(row["image_emb"][k][start:start + teacher.dim])
            torch.testing.assert_close(stored, expected, atol=2e-3, rtol=0)
            start += teacher.dim
    texts = [row["caption"], *row["syn_captions"]]
    torch.testing.assert_close(torch.tensor(row["text_emb"])[:, 24:], teachers[1].embed_texts(texts), atol=2e-3,
                               rtol=0)


def test_streaming_input_given_captions_no_images_bfloat16(built, models, tmp_path):
    """Iterable input keeps its own shards; --captioner none reads a caption column; image_ref replaces image."""
    source = messy_dataset(with_syn=True).to_iterable_dataset(num_shards=2)
    report = build(models, tmp_path, dataset=source, captioner=None, syn_captions_column="syn", num_shards=None,
                   store_images=False, dtype="bfloat16", url_column="uid")
    assert report["skipped"] == EXPECTED_SKIPS
    assert sorted(os.listdir(tmp_path / "data")) == [f"train-{i:05d}-of-00002.parquet" for i in range(2)]
    ds = load_local(tmp_path)
    assert ds.features["image_emb"].feature.feature.dtype == "float32"
    assert ds.features["image_ref"] == datasets.Value("string") and ds[0]["image"] is None
    row = sorted(ds, key=lambda r: r["key"])[0]
    assert row["syn_captions"] == ["syn 0 0", "syn 0 1"] and row["image_ref"] == "u00"
    emb = torch.tensor(row["image_emb"])
    assert torch.equal(emb, emb.to(torch.bfloat16).float())  # bf16-rounded values
    reference = read_rows(built[0])[0]
    assert row["aug_params"] == reference["aug_params"]  # same seed and key: same augmentations
    np.testing.assert_allclose(emb.numpy(), np.array(reference["image_emb"]), atol=1e-2)


def test_cli(models, tmp_path, monkeypatch, capsys):
    from dataset_builder import __main__ as cli

    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    assert "--num-augmentations" in capsys.readouterr().out
    source = tmp_path / "input.parquet"
    messy_dataset(with_syn=True).to_parquet(str(source))
    teachers = iter(models[0])
    monkeypatch.setattr(cli, "load_teacher", lambda spec, device, dtype: next(teachers))
    out = tmp_path / "out"
    cli.main([str(source), str(out), "--teachers", "a", "b", "--captioner", "none", "--syn-captions-column", "syn",
              "--key-column", "uid", "--num-augmentations", "2", "--num-synthetic-captions", "1",
              "--samples-per-shard", "5", "--num-workers", "0", "--format", "datacompdr", "--no-progress"])
    assert json.loads(capsys.readouterr().out)["skipped"] == EXPECTED_SKIPS
    assert sorted(os.listdir(out / "data")) == [f"train-{i:05d}-of-00003.parquet" for i in range(3)]
    assert sorted(os.listdir(out / "datacompdr")) == [f"{i:08d}.tar" for i in range(3)]


def test_no_synthetic_captions(models, tmp_path):
    build(models, tmp_path, captioner=None, num_synthetic_captions=0, num_shards=1, batch_size=32)
    row = load_local(tmp_path)[0]
    assert row["syn_captions"] == [] and len(row["text_emb"]) == 1


def test_rand_augment_magnitude_is_stored_replayed_and_fingerprinted(models, tmp_path):
    from dataset_builder.augment import decompress, magnitude_table
    from dataset_builder.builder import BuildError

    build(models, tmp_path, captioner=None, num_synthetic_captions=0, num_shards=1, rand_augment_magnitude=3,
          license="cc-by-4.0")
    meta = json.loads((tmp_path / "reinforcement.json").read_text())
    assert meta["augmentation"]["magnitude"] == 3
    assert meta["license"] == "cc-by-4.0" and "license: cc-by-4.0" in (tmp_path / "README.md").read_text()
    table = magnitude_table((224, 224), 3)
    ops = [op for row in load_local(tmp_path) for p in json.loads(row["aug_params"]) for op in decompress(p).ops or ()]
    signed = [(name, value) for name, value in ops if table[name][1]]  # stored as the signed magnitude itself
    assert signed and all(abs(value) == pytest.approx(table[name][0]) for name, value in signed)
    with pytest.raises(BuildError, match="other settings"):
        build(models, tmp_path, captioner=None, num_synthetic_captions=0, num_shards=1)  # magnitude 9
    with pytest.raises(BuildError, match="rand_augment_magnitude must be an integer bin in \\[0, 30\\], got 31"):
        build(models, tmp_path / "other", rand_augment_magnitude=31)
