"""The dataset builder fails loudly instead of writing an empty or wrong dataset (tiny teachers, CPU, offline)."""

import json
import os
import re
from pathlib import Path

import datasets
import numpy as np
import pytest

from dataset_builder import builder as builder_module
from dataset_builder.builder import BuildError, build_reinforced_dataset
from dataset_builder.card import finalize_dataset
from modeling_mobileclip.atomic import temporaries, temporary_name

from reinforce_fixtures import load_local, messy_dataset, tiny_teachers

GOOD_KEYS = ["u00", "u01", "u03", "u04", "u05", "u07", "u10", "u12", "u13"]


@pytest.fixture(scope="module")
def teachers():
    return tiny_teachers()


def build(teachers, output_dir, **kwargs):
    options = dict(key_column="uid", num_augmentations=2, num_synthetic_captions=0, num_shards=3, batch_size=4,
                   seed=7, source="messy", progress=False)
    dataset = kwargs.pop("dataset") if "dataset" in kwargs else messy_dataset()
    return build_reinforced_dataset(dataset, str(output_dir), teachers, **{**options, **kwargs})


def keys(output_dir):
    return sorted(load_local(output_dir)["key"])


def assert_not_finalised(output_dir):
    for name in ("README.md", "reinforcement.json", "report.json"):
        assert not (output_dir / name).exists(), name


@pytest.fixture
def no_teacher_runs(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a teacher ran")

    monkeypatch.setattr(builder_module, "reinforce_batch", fail)


def image_arrays():
    rows = messy_dataset()
    return datasets.Dataset.from_dict({"uid": rows["uid"], "image": [np.zeros((4, 4, 3), np.uint8)] * len(rows),
                                       "caption": ["a caption"] * len(rows)})


@pytest.mark.parametrize("kwargs, message", [
    (dict(caption_column="txt"), r"caption_column 'txt' is not a column of the input; its columns are \['uid'"),
    (dict(image_column="jpg"), "image_column 'jpg' is not a column"),
    (dict(key_column="__key__"), "key_column '__key__' is not a column"),
    (dict(syn_captions_column="syn", num_synthetic_captions=1), "syn_captions_column 'syn' is not a column"),
    (dict(caption_column="image"), r"caption_column 'image' holds Image\(.*\), not text"),
    (dict(dataset=image_arrays()), r"image_column 'image' holds List\(List\(List\(Value\('uint8'\)\)\)\), not "
                                   "encoded images"),
    (dict(dataset=messy_dataset().select([])), "the input has no rows"),
])
def test_wrong_columns_fail_before_any_teacher_runs(teachers, tmp_path, no_teacher_runs, kwargs, message):
    with pytest.raises(BuildError, match=message):
        build(teachers, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_columns_of_a_stream_without_features_are_checked_on_its_first_row(teachers, tmp_path, no_teacher_runs):
    stream = image_arrays().to_iterable_dataset()
    stream = stream.map(lambda row: row, features=None)  # map drops the known features
    assert stream.features is None
    with pytest.raises(BuildError, match="image_column 'image' holds list values, not encoded images"):
        build(teachers, tmp_path / "out", dataset=stream, num_shards=None)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_augmentations=0), "num_augmentations must be an integer >= 1, got 0"),
    (dict(num_shards=None, samples_per_shard=0), "samples_per_shard must be an integer >= 1, got 0"),
    (dict(aug_resolution=0), "aug_resolution must be an integer >= 1, got 0"),
    (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
    (dict(num_shards=-3), "num_shards must be None or an integer >= 1, got -3"),
    (dict(num_synthetic_captions=-1, syn_captions_column="caption"), "num_synthetic_captions must be"),
    (dict(num_workers=-1), "num_workers must be"),
    (dict(min_image_size=0), "min_image_size must be"),
    (dict(max_skipped_fraction=1.5), r"max_skipped_fraction must be in \[0, 1\], got 1.5"),
    (dict(rank=2, world_size=2), "rank must be < world_size"),
    (dict(captioner=object(), syn_captions_column="caption"), "syn_captions_column is read only without a captioner"),
])
def test_bad_arguments_fail_up_front(teachers, tmp_path, no_teacher_runs, kwargs, message):
    with pytest.raises(BuildError, match=message):
        build(teachers, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_all_rows_skipped_fails_and_a_rerun_with_the_right_column_builds_everything(teachers, tmp_path):
    blank = messy_dataset().add_column("alt", ["  "] * 14)
    with pytest.raises(BuildError, match=r"shard 0: 4 of 4 rows skipped \(\{'empty_caption': 4\}.*"
                                         r"more than max_skipped_fraction=0.5"):
        build(teachers, tmp_path, dataset=blank, caption_column="alt")
    assert os.listdir(tmp_path / "data") == []
    assert_not_finalised(tmp_path)
    # No shard was finished, so the failed attempt's settings do not block the folder.
    report = build(teachers, tmp_path, dataset=blank)
    assert report["rows_out"] == 9 and keys(tmp_path) == GOOD_KEYS


def test_skipped_fraction_is_enforced_per_shard_and_a_rerun_may_raise_it(teachers, tmp_path):
    # messy_dataset in 3 shards skips 1 of 4, 2 of 5 and 2 of 5 rows.
    with pytest.raises(BuildError, match="shard 1: 2 of 5 rows skipped"):
        build(teachers, tmp_path, max_skipped_fraction=0.3)
    assert sorted(os.listdir(tmp_path / "data")) == ["train-00000-of-00003.parquet"]
    assert_not_finalised(tmp_path)
    first = os.path.getmtime(tmp_path / "data" / "train-00000-of-00003.parquet")
    report = build(teachers, tmp_path, max_skipped_fraction=0.4)  # the limit is not part of the fingerprint
    assert report["num_skipped"] == 5 and keys(tmp_path) == GOOD_KEYS
    assert os.path.getmtime(tmp_path / "data" / "train-00000-of-00003.parquet") == first


def test_a_build_writing_no_row_always_fails(teachers, tmp_path):
    blank = messy_dataset().add_column("alt", ["  "] * 14)
    with pytest.raises(BuildError, match=r"no row was written \(14 read, skipped: \{'empty_caption': 14\}"):
        build(teachers, tmp_path, dataset=blank, caption_column="alt", max_skipped_fraction=1.0)
    assert_not_finalised(tmp_path)


def test_duplicate_keys_across_shards_fail(teachers, tmp_path):
    rows = messy_dataset()
    uids = list(rows["uid"])
    uids[13] = "u00"  # shard 2 repeats a key of shard 0
    dataset = rows.remove_columns("uid").add_column("uid", uids)
    with pytest.raises(BuildError, match=r"key 'u00' is stored in shards \[0, 2\]; keys must be unique"):
        build(teachers, tmp_path, dataset=dataset)
    assert_not_finalised(tmp_path)


def test_rerun_with_other_rows_of_the_same_length_fails(teachers, tmp_path):
    build(teachers, tmp_path, dataset=messy_dataset().select(range(7)), num_shards=2)
    with pytest.raises(BuildError, match=r"other settings \(input.first_row: '[0-9a-f]+' -> '[0-9a-f]+'\)"):
        build(teachers, tmp_path, dataset=messy_dataset().select(range(7, 14)), num_shards=2)
    with pytest.raises(BuildError, match=r"input.columns.url_column: None -> 'caption'"):
        build(teachers, tmp_path, dataset=messy_dataset().select(range(7)), num_shards=2, url_column="caption")
    assert keys(tmp_path) == ["u00", "u01", "u03", "u04", "u05"]


def test_resume_removes_stale_temporaries_of_its_own_shards(teachers, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / ".build").mkdir()
    # The temporaries the writers (modeling_mobileclip.atomic) of a killed build leave behind.
    stale = [Path(temporary_name(str(tmp_path / "data" / f"train-0000{s}-of-00003.parquet"))) for s in range(3)]
    stale.append(Path(temporary_name(str(tmp_path / ".build" / "shard-00001.json"))))
    for path in stale:
        path.write_bytes(b"half a file")
    build(teachers, tmp_path, rank=1, world_size=2)  # shard 1 only: another process may own the others' files
    assert [p.exists() for p in stale] == [True, False, True, False]
    build(teachers, tmp_path, rank=0, world_size=2)
    assert not any(p.exists() for p in stale)
    assert sorted(os.listdir(tmp_path / "data")) == [f"train-{s:05d}-of-00003.parquet" for s in range(3)]
    for name in ("report.json", "README.md"):  # a finalize killed while writing
        Path(temporary_name(str(tmp_path / name))).write_text("{")
    finalize_dataset(str(tmp_path))
    assert not temporaries(str(tmp_path)) and keys(tmp_path) == GOOD_KEYS


# Command line.


@pytest.fixture
def parquet_input(tmp_path):
    source = tmp_path / "input.parquet"
    messy_dataset().to_parquet(str(source))
    return source


def cli_args(source, out, *extra):
    return [str(source), str(out), "--teachers", "a", "b", "--captioner", "none", "--key-column", "uid",
            "--num-augmentations", "2", "--num-synthetic-captions", "0", "--samples-per-shard", "5",
            "--num-workers", "0", "--no-progress", *extra]


@pytest.fixture
def cli(teachers, monkeypatch):
    from dataset_builder import __main__ as cli

    monkeypatch.setattr(cli, "load_teacher", lambda spec, device, dtype: teachers[["a", "b"].index(spec)])
    return cli


@pytest.mark.parametrize("flag, value, message", [
    ("--batch-size", "0", "must be >= 1, got 0"),
    ("--num-shards", "-3", "must be >= 1, got -3"),
    ("--samples-per-shard", "0", "must be >= 1, got 0"),
    ("--teacher-resolution", "0", "must be >= 1, got 0"),
    ("--num-augmentations", "0", "must be >= 1, got 0"),
    ("--max-samples", "0", "must be >= 1, got 0"),
    ("--num-workers", "-1", "must be >= 0, got -1"),
    ("--max-skipped-fraction", "2", r"must be in \[0, 1\], got 2"),
    ("--batch-size", "x", "invalid int value: 'x'"),
])
def test_cli_rejects_bad_numbers(cli, tmp_path, capsys, flag, value, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["in", str(tmp_path / "out"), flag, value])
    assert exit_info.value.code == 2
    assert f"argument {flag}" in (err := capsys.readouterr().err) and re.search(message, err)


def test_cli_rejects_syn_captions_column_with_a_captioner(cli, capsys):
    with pytest.raises(SystemExit):
        cli.parse_args(["in", "out", "--syn-captions-column", "syn"])
    assert "--syn-captions-column is read only with --captioner none" in capsys.readouterr().err


def test_cli_wrong_column_fails_before_models_load(cli, parquet_input, tmp_path, monkeypatch):
    def no_models(*args):
        raise AssertionError("models loaded")

    monkeypatch.setattr(cli, "load_teacher", no_models)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(cli_args(parquet_input, tmp_path / "out", "--caption-column", "txt"))
    assert str(exit_info.value.code).startswith("error: caption_column 'txt' is not a column of the input")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("first, second, field", [
    (["--split", "train[:7]"], ["--split", "train[7:]"], r"input.split: 'train\[:7\]' -> 'train\[7:\]'"),
    (["--max-samples", "7"], ["--max-samples", "9"], "input.max_samples: 7 -> 9"),
])
def test_rerun_of_the_builder_with_a_different_split(cli, parquet_input, tmp_path, capsys, first, second, field):
    """Rerunning into the same folder with other rows is an error, not a copy of the first run's rows."""
    out = tmp_path / "out"
    cli.main(cli_args(parquet_input, out, *first))
    assert json.loads(capsys.readouterr().out)["rows_in"] == 7
    with pytest.raises(SystemExit) as exit_info:
        cli.main(cli_args(parquet_input, out, *second))
    message = str(exit_info.value.code)
    assert message.startswith(f"error: {out} was built with other settings") and "use a new directory" in message
    assert re.search(field, message)
    assert keys(out) == ["u00", "u01", "u03", "u04", "u05"]  # the first build is untouched


def test_cli_failed_build_exits_non_zero_unfinalised(cli, parquet_input, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(cli_args(parquet_input, out, "--max-skipped-fraction", "0.1"))
    assert str(exit_info.value.code).startswith("error: shard 0: 1 of 4 rows skipped")
    assert_not_finalised(out)
