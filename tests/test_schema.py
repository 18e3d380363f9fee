"""dataset_builder.schema, the contract between the builder and training: metadata, features, records (offline)."""

import io
import json

import datasets
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dataset_builder import schema
from dataset_builder.schema import AugmentationInfo, Record, ReinforcementMetadata, TeacherInfo
from train.data import Reinforcement, synthetic_caption_sets

META = ReinforcementMetadata(3, 2, (TeacherInfo("a", 4, 100.0), TeacherInfo("b", 2, 50.0)), seed=7, source="src",
                             augmentation=AugmentationInfo(scale=(0.5, 1.0), magnitude=3, teacher_resolution=64))


def test_metadata_round_trip_and_layout(tmp_path):
    META.save(str(tmp_path))
    meta = json.loads((tmp_path / schema.METADATA_FILE).read_text())
    assert list(meta) == ["num_augmentations", "num_synthetic_captions", "teachers", "embedding_dim", "dtype",
                          "augmentation", "seed", "source", "captioner", "license"]
    assert meta["embedding_dim"] == 6 and meta["teachers"][1] == {"name": "b", "dim": 2, "logit_scale": 50.0}
    assert meta["augmentation"]["scale"] == [0.5, 1.0] and meta["augmentation"]["num_ops"] == 2
    assert ReinforcementMetadata.load(str(tmp_path)) == META
    training = Reinforcement.load(str(tmp_path))
    assert training == Reinforcement(3, 2, (4, 2), (100.0, 50.0)) and training.embedding_dim == 6


@pytest.mark.parametrize("change, message", [
    ({"embedding_dim": 5}, r"teacher dims \(4, 2\) do not sum to embedding_dim 5"),
    ({"num_augmentations": 0}, "needs at least one augmentation"),
    ({"teachers": [{"name": "a"}]}, "not a reinforcement metadata object"),
])
def test_bad_metadata_is_a_clear_error(change, message):
    with pytest.raises(ValueError, match=message):
        ReinforcementMetadata.from_dict({**META.to_dict(), **change}, "here")


def test_missing_metadata_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="reinforcement.json not found.*use recipe: clip"):
        Reinforcement.load(str(tmp_path))


def _record(i, image=True):
    rng = np.random.default_rng(i)
    buf = io.BytesIO()
    Image.new("RGB", (5, 4), (i, 0, 0)).save(buf, format="PNG")
    return Record(key=f"k{i}", caption=f"caption {i}", syn_captions=[f"s{i}a", f"s{i}b"],
                  aug_params=[[[0, 0, 4, 5], [[1, 0.5], [0, 0.0]]]] * 3,
                  image_emb=rng.standard_normal((3, 6)).astype(np.float16),
                  text_emb=rng.standard_normal((3, 6)).astype(np.float16),
                  image_bytes=buf.getvalue() if image else None, image_ref=f"ref{i}")


@pytest.mark.parametrize("store_images", [True, False])
def test_records_round_trip_through_a_shard(tmp_path, store_images):
    features = META.features(store_images)
    records = [_record(i) for i in range(3)]
    path = tmp_path / "shard.parquet"
    pq.write_table(schema.records_to_table(records, features), path)
    back = schema.records_from_table(pq.read_table(path))
    for a, b in zip(records, back, strict=True):
        assert (b.key, b.caption, b.syn_captions, b.aug_params) == (a.key, a.caption, a.syn_captions,
                                                                    json.loads(json.dumps(a.aug_params)))
        np.testing.assert_array_equal(a.image_emb, b.image_emb)
        np.testing.assert_array_equal(a.text_emb, b.text_emb)
        assert b.image_bytes == (a.image_bytes if store_images else None)
        assert b.image_ref == (None if store_images else a.image_ref)
    if not store_images:  # a table of image URLs only, without the image column, reads the same
        without = schema.records_from_table(pq.read_table(path).drop_columns([schema.IMAGE]))
        assert [(r.key, r.image_ref, r.image_bytes) for r in without] == [(r.key, r.image_ref, None) for r in back]
    ds = datasets.Dataset.from_parquet(str(path))
    assert ds.features == features and list(ds.features)[:len(schema.COLUMNS)] == list(schema.COLUMNS)
    # Record.to_row is a row of the features without stored images (the DataCompDR reader's).
    rows = datasets.Dataset.from_list([r.to_row() for r in records], features=META.features(store_images=False))
    assert rows[1]["key"] == "k1" and rows[1]["image_ref"] == "ref1"


def test_empty_shard_has_the_schema():
    table = schema.records_to_table([], META.features())
    assert table.num_rows == 0 and table.schema.equals(META.features().arrow_schema, check_metadata=False)


def test_synthetic_caption_set_names():
    name = schema.syn_captions_column("dfn")
    assert name == "syn_captions_dfn" and schema.synthetic_embedding_column(name) == "syn_text_emb_dfn"
    assert schema.synthetic_embedding_column(schema.SYN_CAPTIONS) is None
    assert schema.is_embedding_column(schema.syn_embeddings_column("dfn")) and schema.is_embedding_column("text_emb")
    assert not schema.is_embedding_column(name) and schema.is_synthetic_caption_set(name)
    columns = [*schema.COLUMNS, name, schema.syn_embeddings_column("dfn")]
    assert synthetic_caption_sets(columns, "^syn_captions") == ("syn_captions", "syn_captions_dfn")


def test_decode_image_accepts_bytes_values_and_pil():
    buf = io.BytesIO()
    Image.new("L", (3, 2), 9).save(buf, format="PNG")
    for value in (buf.getvalue(), {"bytes": buf.getvalue(), "path": None}, Image.open(io.BytesIO(buf.getvalue()))):
        image = schema.decode_image(value)
        assert image.mode == "RGB" and image.size == (3, 2) and image.getpixel((0, 0)) == (9, 9, 9)
    with pytest.raises(Exception):
        schema.decode_image(buf.getvalue()[:20])
