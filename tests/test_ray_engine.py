"""The builder's Ray engine on a local Ray cluster (127.0.0.1, 2 CPUs, two workers): the dataset of one process, with a
worker killed mid-run, and a driver killed mid-run then resumed; errors named up front (tiny teachers, offline)."""

import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from dataset_builder.builder import BuildError, build_reinforced_dataset
from dataset_builder.ray_engine import RayEngine
from modeling_mobileclip import MobileCLIPImageProcessor, MobileCLIPProcessor, MobileCLIPTokenizer
from modeling_mobileclip.atomic import temporaries
from modeling_mobileclip.modeling_mobileclip import MobileCLIPModel

from conftest import randomize_, tiny_config
from reinforce_fixtures import messy_dataset, tiny_teachers

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install 'mobileclip-hf[ray]')")
# A single-node cluster on the loopback interface (on Linux, Ray binds the machine's address unless told that the
# cluster has one node), without token authentication. Set before ray is imported (it reads them then), for this
# process and the ones it starts: the cluster and a driver.
for name, value in {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
                    "RAY_USAGE_STATS_ENABLED": "0"}.items():
    os.environ.setdefault(name, value)
# 7 shards of 2 rows (shard 4 skips both).
OPTIONS = dict(key_column="uid", num_augmentations=2, num_synthetic_captions=0, num_shards=7, batch_size=2, seed=7,
               source="messy", max_skipped_fraction=1.0, progress=False)
FINAL_FILES = ("reinforcement.json", "README.md", ".build/settings.json")


@pytest.fixture(scope="module")
def cluster():
    """The address of a Ray head started for this module (``ray start --block``, stopped and removed afterwards)."""
    with pytest.MonkeyPatch.context() as env:
        env.delenv("RAY_ADDRESS", raising=False)
        folder = tempfile.mkdtemp(prefix="ray-")  # short: it holds Ray's unix sockets
        log = open(os.path.join(folder, "head.log"), "w+")
        head = subprocess.Popen(
            [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", "--node-ip-address",
             "127.0.0.1", "--port", "0", "--num-cpus", "2", "--num-gpus", "0", "--include-dashboard", "false",
             "--disable-usage-stats", "--temp-dir", folder],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        try:
            deadline = time.monotonic() + 120
            while "Ray runtime started" not in Path(log.name).read_text():
                assert head.poll() is None and time.monotonic() < deadline, Path(log.name).read_text()
                time.sleep(0.2)
            yield Path(folder, "ray_current_cluster").read_text().strip()
        finally:
            head.terminate()  # `ray start --block` stops the processes it started
            try:
                head.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait()
            log.close()
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The dataset built in this process, without Ray."""
    path = tmp_path_factory.mktemp("single-process")
    build_reinforced_dataset(messy_dataset(), str(path), tiny_teachers(), **OPTIONS)
    return path


def assert_same_dataset(out: Path, reference: Path) -> None:
    """Same shards (tables and bytes), metadata, report and card, and nothing else in the folders."""
    names = sorted(os.listdir(reference / "data"))
    assert sorted(os.listdir(out / "data")) == names  # no temporary file either
    for name in names:
        assert pq.read_table(out / "data" / name).equals(pq.read_table(reference / "data" / name))
        assert (out / "data" / name).read_bytes() == (reference / "data" / name).read_bytes()
    for name in FINAL_FILES:
        assert (out / name).read_text() == (reference / name).read_text(), name
    report, expected = (json.loads((folder / "report.json").read_text()) for folder in (out, reference))
    # A skipped row's detail may quote an object's address (PIL's "cannot identify image file <_io.BytesIO ...>").
    for r in (report, expected):
        r["skipped_examples"] = [example[:2] for example in r["skipped_examples"]]
    assert report == expected
    assert not temporaries(str(out)) and not temporaries(str(out / ".build"))


class ShardVersions(threading.Thread):
    """Records every version (inode) of each shard file while a build runs: a shard written twice shows two (an
    atomic rewrite creates the new file before the old one goes)."""

    def __init__(self, folder: Path):
        super().__init__(daemon=True)
        self.folder, self.versions, self.done = folder, defaultdict(set), threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.01):
            self.scan()

    def scan(self) -> None:
        try:
            entries = list(os.scandir(self.folder))
        except FileNotFoundError:
            return
        for entry in entries:
            if not entry.name.startswith("."):  # temporaries start with a dot
                self.versions[entry.name].add(entry.inode())

    def __enter__(self) -> "ShardVersions":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.join()
        self.scan()


def killing(tokenize, marker: str, when):
    """``tokenize`` that SIGKILLs its process when ``when(call number in this process, texts)`` holds, in one process
    only (the first to create ``marker``) unless ``marker`` is None: a worker dying in the middle of a shard."""
    calls = []

    def tokenize_or_die(texts):
        calls.append(texts)
        if when(len(calls), texts):
            try:
                if marker is not None:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os.kill(os.getpid(), signal.SIGKILL)
        return tokenize(texts)

    return tokenize_or_die


@needs_ray
def test_a_worker_killed_mid_run_changes_nothing(cluster, reference, tmp_path, caplog):
    """Two workers; the first to start its second shard (one teacher batch a shard) is killed in it. Its shard is
    rebuilt on another worker, every shard is written once, and the dataset is the single-process one."""
    teachers, marker, out = tiny_teachers(), tmp_path / "killed", tmp_path / "out"
    teachers[0].tokenize = killing(teachers[0].tokenize, str(marker), lambda call, texts: call == 2)
    engine = RayEngine(address=cluster, num_workers=2, poll_s=1)
    with caplog.at_level(logging.WARNING, "dataset_builder.ray_engine"), ShardVersions(out / "data") as versions:
        report = build_reinforced_dataset(messy_dataset(), str(out), teachers, engine=engine, **OPTIONS)
    assert marker.exists() and report["rows_out"] == 9
    assert any("died" in r.getMessage() and "retrying it (attempt 2 of 5)" in r.getMessage() for r in caplog.records)
    assert {name: len(inodes) for name, inodes in versions.versions.items()} == {
        f"train-{s:05d}-of-00007.parquet": 1 for s in range(7)}
    assert_same_dataset(out, reference)


@needs_ray
def test_a_shard_that_keeps_killing_its_worker_fails_the_build(cluster, tmp_path):
    teachers = tiny_teachers()
    teachers[0].tokenize = killing(teachers[0].tokenize, None, lambda call, texts: "last one" in texts)
    engine = RayEngine(address=cluster, num_workers=1, max_attempts=1, poll_s=1)
    with pytest.raises(BuildError, match=r"shard 6: the Ray worker building it died, 1 times \(last: .*\); giving "
                                         r"up at max_attempts=1"):
        build_reinforced_dataset(messy_dataset(), str(tmp_path), teachers, engine=engine, **OPTIONS)
    assert not (tmp_path / "report.json").exists()


# The command line, with a killed driver: the workers load the teacher from its spec.


@pytest.fixture(scope="module")
def teacher_spec(tmp_path_factory):
    """``hf:<folder>`` of a tiny MobileCLIP saved with its processor."""
    path = tmp_path_factory.mktemp("tiny-teacher")
    torch.manual_seed(0)
    randomize_(MobileCLIPModel(tiny_config())).save_pretrained(path)
    image_processor = MobileCLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    MobileCLIPProcessor(image_processor, MobileCLIPTokenizer()).save_pretrained(path)
    return f"hf:{path}"


@pytest.fixture(scope="module")
def parquet_input(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "input.parquet"
    messy_dataset().to_parquet(str(path))
    return path


def cli_args(source, out, teacher, *extra):
    return [str(source), str(out), "--teachers", teacher, "--captioner", "none", "--key-column", "uid",
            "--num-augmentations", "2", "--num-synthetic-captions", "0", "--samples-per-shard", "1",
            "--max-skipped-fraction", "1", "--num-workers", "0", "--no-progress", *extra]


@needs_ray
def test_cli_driver_killed_mid_run_resumes_without_rebuilding_finished_shards(cluster, teacher_spec, parquet_input,
                                                                               tmp_path, capsys):
    from dataset_builder import __main__ as cli

    out, reference, log = tmp_path / "out", tmp_path / "reference", tmp_path / "driver.log"
    # As many workers as the cluster holds: two.
    args = cli_args(parquet_input, out, teacher_spec, "--engine", "ray", "--ray-address", cluster)
    with open(log, "w") as f:
        driver = subprocess.Popen([sys.executable, "-m", "dataset_builder", *args], stdout=f, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while not (out / "data").is_dir() or not any(n.endswith(".parquet") for n in os.listdir(out / "data")):
        assert driver.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "no shard was written"
        time.sleep(0.02)
    driver.kill()  # SIGKILL: no clean-up of any kind
    driver.wait()
    finished = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "data").glob("*.parquet")}
    assert 0 < len(finished) < 14 and not (out / "report.json").exists()

    cli.main(args)  # the same command again
    assert '"rows_out": 9' in capsys.readouterr().out
    for name, version in finished.items():  # not rebuilt
        path = out / "data" / name
        assert (path.stat().st_ino, path.stat().st_mtime_ns) == version, name
    cli.main(cli_args(parquet_input, reference, teacher_spec))  # the same build in this process
    assert_same_dataset(out, reference)


# Errors, named before any model is loaded.


@needs_ray
@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:1", r"no Ray cluster at '127.0.0.1:1' \(.*\): start one with `ray start --head`"),
    ("nowhere", r"Ray address 'nowhere' is not 'auto' or host:port"),
])
def test_bad_ray_address(tmp_path, monkeypatch, address, message):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(BuildError, match=message):
        build_reinforced_dataset(messy_dataset(), str(tmp_path), tiny_teachers(), engine=RayEngine(address=address),
                                 **OPTIONS)
    assert not (tmp_path / "data").exists()


def test_without_ray_the_engine_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(BuildError, match=r"the Ray engine needs the ray package: pip install 'mobileclip-hf\[ray\]'"):
        build_reinforced_dataset(messy_dataset(), str(tmp_path), tiny_teachers(), engine=RayEngine(), **OPTIONS)


@pytest.mark.parametrize("options, message", [
    (dict(num_workers=0), "num_workers must be None or an integer >= 1, got 0"),
    (dict(num_gpus_per_worker=-1), "num_gpus_per_worker must be None or >= 0, got -1"),
    (dict(model_dtype="fp16"), r"model_dtype must be None or one of \['float32', 'float16', 'bfloat16'\]"),
    (dict(max_attempts=0), "max_attempts must be an integer >= 1, got 0"),
])
def test_bad_engine_options(options, message):
    with pytest.raises(BuildError, match=message):
        RayEngine(**options)


def test_engine_misuse_fails_up_front(tmp_path):
    with pytest.raises(BuildError, match="the Ray engine dispatches every shard from one driver process, got "
                                         "world_size 2"):
        build_reinforced_dataset(messy_dataset(), str(tmp_path), ["hf:x"], engine=RayEngine(), world_size=2,
                                 **OPTIONS)
    with pytest.raises(BuildError, match="teacher and captioner specs are loaded by the Ray engine's workers"):
        build_reinforced_dataset(messy_dataset(), str(tmp_path), ["hf:x"], **OPTIONS)
    assert not (tmp_path / "data").exists()


def test_cli_ray_options_need_the_ray_engine(capsys):
    from dataset_builder import __main__ as cli

    with pytest.raises(SystemExit) as exit_info:
        cli.parse_args(["in", "out", "--ray-workers", "2"])
    assert exit_info.value.code == 2
    assert "--ray-address, --ray-workers, --ray-gpus-per-worker, --ray-cpus-per-worker are options of --engine ray" \
        in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.parse_args(["in", "out", "--engine", "ray", "--ray-gpus-per-worker", "-1"])
    assert "argument --ray-gpus-per-worker: must be >= 0, got -1" in capsys.readouterr().err
