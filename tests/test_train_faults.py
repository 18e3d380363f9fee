"""Faults of train/train.py: checkpoints that would run code when resumed, runs killed while saving, stray entries in
checkpoints/, and values or losses that are not finite."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import load_file
from test_train import Interrupted, base_config, interrupt_at_micro_batch, make_dataset, write_config

from train.train import TRAIN_STATE, TrainConfig, load_config, training_function

from conftest import tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": REPO}


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault_assets")
    tiny_config().save_pretrained(root / "tiny")
    return {"model": str(root / "tiny"), "learnable": make_dataset(root / "learnable", n=16, augment=False),
            "cache": str(root / "cache")}


@pytest.fixture(autouse=True)
def reset_accelerate():
    from accelerate.state import AcceleratorState

    yield
    AcceleratorState._reset_state(reset_partial_state=True)


def run(assets, output_dir, **overrides) -> None:
    training_function(TrainConfig(**base_config(assets, output_dir, **overrides)))


def listing(output_dir) -> list[str]:
    return sorted(os.listdir(os.path.join(output_dir, "checkpoints")))


def runs(output_dir) -> list[dict[int, dict]]:
    """metrics.jsonl split into runs (each starts with its config record): per run, the records of each step."""
    result = []
    for record in map(json.loads, open(os.path.join(output_dir, "metrics.jsonl"))):
        if "config" in record:
            result.append({})
        else:
            result[-1].setdefault(record["step"], {}).update(record)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Resuming a checkpoint from elsewhere runs none of its code


class Payload:
    """Unpickled, creates `marker` (what a checkpoint with a `__reduce__` payload could do instead is anything)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def stopped_run(assets, tmp_path_factory):
    """A run of 3 steps interrupted after step 2, whose checkpoint_0 is at step 2."""
    output = tmp_path_factory.mktemp("stopped") / "run"
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Interrupted):
        interrupt_at_micro_batch(patch, 3)
        run(assets, output, train_steps=3, save_every=2)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    assert sorted(runs(output)[0]) == [1, 2] and not os.path.exists(output / "model.safetensors")
    assert listing(output) == ["checkpoint_0"]
    return output


def tampered_copy(stopped_run, tmp_path, name: str, marker: str, remove: str | None = None):
    output = tmp_path / "run"
    shutil.copytree(stopped_run, output)
    checkpoint = output / "checkpoints" / "checkpoint_0"
    if remove:
        os.remove(checkpoint / remove)
    torch.save({"state": Payload(marker), "weights": torch.zeros(2)}, checkpoint / name)
    return output


# Files accelerate.load_state reads (with weights_only=True, except custom checkpoints): a clear error, nothing run.
@pytest.mark.parametrize("name, remove, error", [
    ("custom_checkpoint_1.pkl", None, r"holds \['custom_checkpoint_1.pkl'\]: pickles that loading would execute"),
    ("random_states_0.pkl", None, r"random_states_0.pkl is not a plain random-state file and was not loaded"),
    ("optimizer.bin", None, r"holds a file that is not plain tensors and was not loaded"),
    ("pytorch_model.bin", "model.safetensors", r"holds a file that is not plain tensors and was not loaded"),
])
def test_resume_refuses_pickled_code(assets, stopped_run, tmp_path, name, remove, error):
    marker = str(tmp_path / "pwned")
    output = tampered_copy(stopped_run, tmp_path, name, marker, remove)
    with pytest.raises(ValueError, match=error):
        run(assets, output, train_steps=3, save_every=2, resume_from_checkpoint="latest")
    assert not os.path.exists(marker)
    assert not os.path.exists(output / "model.safetensors")


# Files accelerate never reads for this script (no prepared scheduler, streaming sampler, stateful loader or, on CPU,
# GradScaler): ignored, and the run resumes and finishes.
@pytest.mark.parametrize("name", ["scheduler.bin", "sampler.bin", "dl_state_dict.bin", "scaler.pt"])
def test_resume_ignores_files_it_does_not_load(assets, stopped_run, tmp_path, name, capsys):
    marker = str(tmp_path / "pwned")
    output = tampered_copy(stopped_run, tmp_path, name, marker)
    run(assets, output, train_steps=3, save_every=2, resume_from_checkpoint="latest")
    assert not os.path.exists(marker)
    assert "checkpoint_0 (step 2)" in capsys.readouterr().out
    assert sorted(runs(output)[-1]) == [3] and os.path.isfile(output / "model.safetensors")


def test_train_state_is_checked_data(assets, stopped_run, tmp_path):
    output = tmp_path / "run"
    shutil.copytree(stopped_run, output)
    path = output / "checkpoints" / "checkpoint_0" / TRAIN_STATE
    state = json.loads(path.read_text())
    assert sorted(state["progress"]) == ["batch_in_epoch", "epoch", "skipped", "step"]
    assert state["progress"]["step"] == 2
    assert state["scheduler"]["last_epoch"] == 2
    cases = [({**state, "progress": {**state["progress"], "step": "__import__('os')"}}, "progress.step must be int"),
             ({**state, "progress": {**state["progress"], "epoch": -1}}, "progress counts must be >= 0"),
             ({**state, "scheduler": {**state["scheduler"], "base_lrs": [1e-4]}}, "base_lrs must be a list of 2"),
             ({**state, "scheduler": {**state["scheduler"], "_last_lr": [float("nan")] * 2}}, "must be finite"),
             ({**state, "extra": 1}, "must have the keys")]
    for bad, error in cases:
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=error):
            run(assets, output, train_steps=3, save_every=2, resume_from_checkpoint="latest")
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"{TRAIN_STATE} is not readable JSON"):
        run(assets, output, train_steps=3, save_every=2, resume_from_checkpoint="latest")


# ---------------------------------------------------------------------------------------------------------------------
# Interrupted saves and stray entries

DRIVER = """
import sys, time
import accelerate.accelerator
from train.train import main

config, marker = sys.argv[1:]
save, calls = accelerate.accelerator.save_accelerator_state, []


def slow_save(*args, **kwargs):  # the second checkpoint's files are written, then the save hangs until killed
    result = save(*args, **kwargs)
    calls.append(1)
    if len(calls) == 2:
        open(marker, "w").close()
        time.sleep(600)
    return result


accelerate.accelerator.save_accelerator_state = slow_save
main(["--config", config])
"""


def test_killed_while_saving_resumes_from_previous_checkpoint(assets, tmp_path, capsys):
    output, marker = tmp_path / "run", tmp_path / "saving"
    # save_total_limit=1: the rotation must not delete checkpoint_0 before checkpoint_1 is complete.
    config = write_config(tmp_path / "config.yaml", **base_config(assets, output, save_total_limit=1))
    (tmp_path / "driver.py").write_text(DRIVER)
    process = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), config, str(marker)], cwd=REPO, env=ENV,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 500
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), process.communicate(timeout=60)[0].decode()[-3000:]
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # SIGKILL: no handler, no cleanup, as on a preempted machine
        process.wait()
    killed = runs(output)[0]
    assert sorted(killed) == [1, 2, 3, 4]  # killed while saving step 4's checkpoint
    assert listing(output) == [".tmp-checkpoint_1", "checkpoint_0"]
    (output / "checkpoints" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # a stray entry must not crash resume

    run(assets, output, save_total_limit=1, resume_from_checkpoint="latest")
    out = capsys.readouterr().out
    assert f"Resumed from {output / 'checkpoints' / 'checkpoint_0'} (step 2)" in out
    assert "left by a run interrupted while saving" in out
    resumed = runs(output)[1]
    assert sorted(resumed) == [3, 4, 5, 6]
    for step in (3, 4):  # the same steps as before the kill
        assert resumed[step]["train/loss"] == pytest.approx(killed[step]["train/loss"], abs=1e-6, rel=0)
    assert listing(output) == [".DS_Store", "checkpoint_2"]  # numbering continued; rotation kept only the newest
    assert json.loads((output / "checkpoints" / "checkpoint_2" / TRAIN_STATE).read_text())["progress"]["step"] == 6
    assert os.path.isfile(output / "model.safetensors")


def test_latest_skips_stray_and_incomplete_entries(assets, stopped_run, tmp_path, capsys):
    output = tmp_path / "run"
    shutil.copytree(stopped_run, output)
    checkpoints = output / "checkpoints"
    (checkpoints / ".DS_Store").write_bytes(b"")
    (checkpoints / "checkpoint_notes").mkdir()
    (checkpoints / "checkpoint_9.txt").write_text("not a folder")
    # A newer folder written in place and cut short (as accelerate's own save_state leaves one), and a stale temporary.
    (checkpoints / "checkpoint_7").mkdir()
    shutil.copy(checkpoints / "checkpoint_0" / "model.safetensors", checkpoints / "checkpoint_7")
    shutil.copytree(checkpoints / "checkpoint_0", checkpoints / ".tmp-checkpoint_1")
    run(assets, output, train_steps=4, save_every=2, resume_from_checkpoint="latest")
    out = capsys.readouterr().out
    assert f"Skipping {checkpoints / 'checkpoint_7'}: incomplete" in out
    assert f"Resumed from {checkpoints / 'checkpoint_0'} (step 2)" in out
    assert sorted(runs(output)[-1]) == [3, 4]
    # The new checkpoint is named after every existing one; foreign entries are left alone, the temporary removed.
    assert listing(output) == [".DS_Store", "checkpoint_0", "checkpoint_7", "checkpoint_8", "checkpoint_9.txt",
                               "checkpoint_notes"]
    with pytest.raises(ValueError, match=f"checkpoint_7 has no {TRAIN_STATE}, so it is incomplete"):
        run(assets, output, train_steps=4, resume_from_checkpoint=str(checkpoints / "checkpoint_7"))


# ---------------------------------------------------------------------------------------------------------------------
# Non-finite values and losses


@pytest.mark.parametrize("override, error", [
    ("lr=1e6", r"lr must be in \(0, 1\], got 1000000.0"),
    ("lr=.inf", "lr must be finite, got inf"),
    ("lr=-.inf", "lr must be finite"),
    ("lr=.nan", "lr must be finite, got nan"),
    ("lr=0", r"lr must be in \(0, 1\]"),
    ("weight_decay=.nan", "weight_decay must be finite, got nan"),
    ("weight_decay=5", r"weight_decay must be in \[0, 1\], got 5$"),
    ("weight_decay=-0.1", r"weight_decay must be in \[0, 1\]"),
    ("eps=0", r"eps must be in \(0, 1\) or null"),
    ("beta1=.nan", "beta1 must be finite"),
    ("max_grad_norm=.nan", "max_grad_norm must be finite"),
    ("max_grad_norm=.inf", "max_grad_norm must be finite"),
    ("loss_weights=[-0.5, 1.5]", r"loss_weights must be >= 0 and not both 0, got \[-0.5, 1.5\]"),
    ("loss_weights=[0, 0]", "loss_weights must be >= 0 and not both 0"),
    ("loss_weights=[.nan, 1]", "loss_weights must be finite"),
    ("teacher_logit_scale=-100", r"teacher_logit_scale must be > 0 \(one, or one per teacher\), got -100$"),
    ("teacher_logit_scale=[100, -1]", "teacher_logit_scale must be > 0"),
    ("teacher_logit_scale=0", "teacher_logit_scale must be > 0"),
    ("teacher_logit_scale=.inf", "teacher_logit_scale must be finite"),
    ("crop_scale=[.nan, 1]", "crop_scale must be finite"),
])
def test_config_rejects_non_finite_and_absurd_values(tmp_path, override, error):
    config = write_config(tmp_path / "config.yaml", train_dataset="x")
    with pytest.raises(StrictDataclassError, match=error) as raised:
        load_config(config, [override])
    assert str(raised.value.__cause__).count("\n") == 1  # one error, naming the key


def test_config_bounds_accept_the_edges(tmp_path):
    config = write_config(tmp_path / "config.yaml", train_dataset="x")
    cfg = load_config(config, ["lr=1", "weight_decay=0", "eps=1e-6", "max_grad_norm=0", "loss_weights=[0, 1]",
                               "teacher_logit_scale=[70, 60]"])
    assert cfg.lr == 1 and cfg.teacher_logit_scale == [70, 60]
    assert load_config(config, ["recipe=clip", "loss_weights=[0, 0]"]).loss_weights == [0.0, 0.0]  # ignored by clip


def test_cli_exits_non_zero_on_absurd_lr(tmp_path):
    config = write_config(tmp_path / "config.yaml", train_dataset="x")
    result = subprocess.run([sys.executable, os.path.join(REPO, "train", "train.py"), "--config", config, "lr=1e6"],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "lr must be in (0, 1], got 1000000.0" in result.stderr


def _finite_checkpoint(output) -> bool:
    weights = load_file(os.path.join(output, "checkpoints", "checkpoint_0", "model.safetensors"))
    return all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(assets, tmp_path, monkeypatch):
    import train.train as train_module

    compute_loss, calls = train_module.compute_loss, []

    def diverging_loss(*args, **kwargs):  # from step 3 on, as a run whose lr is too high for its data
        losses = compute_loss(*args, **kwargs)
        calls.append(1)
        return {k: v * float("nan") for k, v in losses.items()} if len(calls) >= 3 else losses

    monkeypatch.setattr(train_module, "compute_loss", diverging_loss)
    output = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"the loss is not finite at step 3 \(loss nan"):
        run(assets, output)
    assert listing(output) == ["checkpoint_0"] and _finite_checkpoint(output)  # step 2's, not step 4's
    assert not os.path.exists(output / "model.safetensors")
    assert sorted(runs(output)[0]) == [1, 2]


def test_non_finite_weights_after_finite_loss_are_not_saved(assets, tmp_path, monkeypatch):
    import train.train as train_module

    build_optimizer = train_module.build_optimizer

    def overflowing_optimizer(model, cfg):  # step 4's update overflows a weight; its loss was still finite
        optimizer, steps = build_optimizer(model, cfg), []

        def overflow(optimizer, args, kwargs):
            steps.append(1)
            if len(steps) == 4:
                with torch.no_grad():
                    next(p for p in model.parameters() if p.ndim > 1).view(-1)[0] = float("inf")  # not logit_scale

        optimizer.register_step_post_hook(overflow)
        return optimizer

    monkeypatch.setattr(train_module, "build_optimizer", overflowing_optimizer)
    output = tmp_path / "run"
    with pytest.raises(FloatingPointError, match="after step 4, 1 tensors are not finite"):
        run(assets, output)
    assert listing(output) == ["checkpoint_0"] and _finite_checkpoint(output)
    assert not os.path.exists(output / "model.safetensors")
