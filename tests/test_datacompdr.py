"""DataCompDR webdataset layout: our datasets written in it read back identically; a hand-made shard is read."""

import io
import json
import tarfile

import datasets
import numpy as np
import pytest

from dataset_builder.builder import build_reinforced_dataset
from dataset_builder.datacompdr import load_datacompdr, write_datacompdr

from reinforce_fixtures import load_local, messy_dataset, tiny_teachers


@pytest.fixture(scope="module")
def reinforced(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("reinforced")
    build_reinforced_dataset(messy_dataset(with_syn=True), str(output_dir), tiny_teachers(), None, key_column="uid",
                             syn_captions_column="syn", num_augmentations=2, num_synthetic_captions=3, num_shards=2,
                             progress=False)
    return output_dir


def rows_by_key(dataset):
    return {row["key"]: row for row in dataset}


@pytest.mark.parametrize("embedding_format", ["npz", "pth.gz"])
def test_written_shards_read_back_identically(reinforced, tmp_path, embedding_format):
    paths = write_datacompdr(str(reinforced), str(tmp_path), embedding_format)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["00000000.tar", "00000001.tar"]
    with tarfile.open(paths[0]) as tar:
        names = tar.getnames()
    assert {n.split(".", 1)[1] for n in names} >= {"url.txt", "txt", "syn.json", "paug.json", embedding_format, "json"}
    ours = rows_by_key(load_local(reinforced).cast_column(
        "image", datasets.Image(decode=False)))
    back = load_datacompdr(str(tmp_path), streaming=True)
    assert back.num_shards == 2
    theirs = rows_by_key(back.cast_column("image", datasets.Image(decode=False)))
    assert sorted(theirs) == sorted(ours)
    for key, row in ours.items():
        other = theirs[key]
        for column in ("caption", "syn_captions", "aug_params"):
            assert other[column] == row[column]
        assert other["image"]["bytes"] == row["image"]["bytes"]
        for column in ("image_emb", "text_emb"):
            a, b = np.array(row[column], np.float32), np.array(other[column], np.float32)
            if embedding_format == "npz":
                np.testing.assert_array_equal(a, b)  # float16 -> float32 -> float16 is exact
            else:
                np.testing.assert_allclose(a, b, atol=4e-3)  # bfloat16 storage


def test_hand_made_shard(tmp_path):
    rng = np.random.default_rng(0)
    members = {}
    for i in range(2):
        key = f"{i:09d}"
        buf = io.BytesIO()
        np.savez(buf, image_emb=rng.standard_normal((3, 8)).astype(np.float32),
                 text_emb=rng.standard_normal((3, 8)).astype(np.float32))
        members[f"{key}.url.txt"] = f"https://example.com/{i}.jpg".encode()
        members[f"{key}.syn.json"] = json.dumps({"syn_text": [f"syn {i} a", f"syn {i} b"]}).encode()
        members[f"{key}.paug.json"] = json.dumps({"param_aug": [[[0, 0, 4, 4], None]] * 3}).encode()
        members[f"{key}.npz"] = buf.getvalue()
        members[f"{key}.json"] = json.dumps({"uid": f"uid{i}", "sha256": "0" * 64}).encode()
    with tarfile.open(tmp_path / "00000000.tar", "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ds = load_datacompdr(str(tmp_path / "*.tar"), dtype="float32")
    assert ds["key"] == ["uid0", "uid1"] and ds["image_ref"][1] == "https://example.com/1.jpg"
    assert ds[0]["image"] is None and ds[0]["caption"] is None
    assert ds[1]["syn_captions"] == ["syn 1 a", "syn 1 b"]
    assert json.loads(ds[0]["aug_params"]) == [[[0, 0, 4, 4], None]] * 3
    emb = np.load(io.BytesIO(members["000000001.npz"]))
    np.testing.assert_array_equal(np.array(ds[1]["image_emb"], np.float32), emb["image_emb"])
    np.testing.assert_array_equal(np.array(ds[1]["text_emb"], np.float32), emb["text_emb"])
