import json
import os

import pytest

from modeling_mobileclip.atomic import atomic_path, scratch_folder, temporaries, write_json


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_atomic_path_writes_on_success_and_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "a.json"
    write_json(str(path), {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_path(str(path)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("killed")
    assert json.loads(path.read_text()) == {"x": 1}
    assert temporaries(str(tmp_path)) == []


def test_atomic_path_writes_a_folder_and_refuses_an_empty_result(tmp_path):
    out = tmp_path / "out"
    with atomic_path(str(out)) as tmp:
        os.mkdir(tmp)
        (tmp_path / os.path.basename(tmp) / "f").write_text("1")
    assert (out / "f").read_text() == "1"
    with pytest.raises(FileNotFoundError, match="nothing was written"):
        with atomic_path(str(tmp_path / "b")):
            pass
    assert not (tmp_path / "b").exists()


def test_temporaries_finds_what_a_killed_writer_left(tmp_path):
    (tmp_path / ".x.parquet.tmp-abc").write_text("")
    (tmp_path / "x.parquet").write_text("")
    assert temporaries(str(tmp_path)) == [str(tmp_path / ".x.parquet.tmp-abc")]
    assert temporaries(str(tmp_path), "x.parquet") == [str(tmp_path / ".x.parquet.tmp-abc")]
    assert temporaries(str(tmp_path), "y.parquet") == []


def test_scratch_folder_is_beside_its_path_found_by_temporaries_and_removed_however_it_ends(tmp_path):
    target = tmp_path / "fp32"
    with scratch_folder(str(target)) as folder:
        assert os.path.isdir(folder) and os.listdir(folder) == []
        assert temporaries(str(tmp_path), "fp32") == [folder]
        (tmp_path / os.path.basename(folder) / "prepared.onnx").write_text("graph")
    assert not os.path.exists(folder) and not target.exists()
    with pytest.raises(RuntimeError, match="killed"):
        with scratch_folder(str(target)) as folder:
            (tmp_path / os.path.basename(folder) / "f").write_text("1")
            raise RuntimeError("killed")
    assert temporaries(str(tmp_path)) == [] and os.listdir(tmp_path) == []
