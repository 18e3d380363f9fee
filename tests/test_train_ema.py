"""train/'s exponential moving average of the weights (`ema_decay`, `ema_warmup_power`): against a direct computation
from the raw weights of every step, evaluated and saved in place of them, and resumed exactly."""

import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import load_file
from test_train import Interrupted, interrupt_at_micro_batch, make_dataset, make_eval_datasets
from test_train_options import run

import train.train as train_module
from train.train import EMA_WEIGHTS, TrainConfig

from conftest import tiny_config

DECAY, POWER, STEPS = 0.6, 0.5, 4


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("ema_assets")
    tiny_config().save_pretrained(root / "tiny")
    zeroshot, _ = make_eval_datasets(root / "eval")
    return {"model": str(root / "tiny"), "learnable": make_dataset(root / "data", n=16), "zeroshot": zeroshot,
            "cache": str(root / "cache")}


def expected_averages(raw: list[dict[str, torch.Tensor]], decay: float, power: float | None) -> list[dict]:
    """E_1 = W_1, E_t = d_t E_(t-1) + (1 - d_t) W_t with d_t = min(decay, 1 - t^-power) (decay without a power);
    integer buffers (BatchNorm's batch counts) are the raw ones."""
    averages = [dict(raw[0])]
    for t, weights in enumerate(raw[1:], start=2):
        d = min(decay, 1 - t ** -power) if power is not None else decay
        averages.append({name: d * averages[-1][name] + (1 - d) * w if w.is_floating_point() else w
                         for name, w in weights.items()})
    return averages


@pytest.mark.parametrize("power", [POWER, None])
def test_moving_average_is_evaluated_saved_and_checkpointed(assets, tmp_path, monkeypatch, power):
    evaluated = {}

    def record(model, **kwargs):  # what evaluation sees at each step: a copy of its weights
        evaluated[len(evaluated) + 1] = {k: v.clone() for k, v in model.state_dict().items()}
        return {"zeroshot/top1": 0.5}

    monkeypatch.setattr(train_module, "run_eval_tasks", record)
    output = tmp_path / "run"
    run(assets, output, train_steps=STEPS, save_every=1, save_total_limit=None, eval_every=1,
        eval_zeroshot_dataset=assets["zeroshot"], eval_zeroshot_split="test", ema_decay=DECAY, ema_warmup_power=power)
    checkpoints = [output / "checkpoints" / f"checkpoint_{i}" for i in range(STEPS)]
    raw = [load_file(c / "model.safetensors") for c in checkpoints]  # the trained weights after steps 1 .. 4
    want = expected_averages(raw, DECAY, power)
    assert any(v.dtype == torch.int64 for v in raw[0].values())  # BatchNorm: buffers are averaged or copied
    saved = load_file(output / "model.safetensors")
    for step, (checkpoint, average) in enumerate(zip(checkpoints, want), start=1):
        stored = load_file(checkpoint / EMA_WEIGHTS)
        for name, value in average.items():
            torch.testing.assert_close(stored[name], value, rtol=0, atol=1e-6, msg=f"step {step} {name}")
            torch.testing.assert_close(evaluated[step][name], value, rtol=0, atol=1e-6, msg=f"step {step} {name}")
    for name, value in want[-1].items():
        torch.testing.assert_close(saved[name], value, rtol=0, atol=1e-6, msg=name)
    # The average is not the raw weights: the test would not tell them apart otherwise.
    assert max((want[-1][k] - raw[-1][k]).abs().max().item() for k in raw[-1] if raw[-1][k].is_floating_point()) > 1e-4
    card = ModelCard.load(output / "README.md").text
    assert f"exponential moving average (decay {DECAY:g}" in card


def test_resumed_moving_average_matches_an_uninterrupted_run(assets, tmp_path, monkeypatch):
    options = dict(train_steps=STEPS, save_every=2, ema_decay=DECAY, ema_warmup_power=POWER)
    run(assets, tmp_path / "full", **options)
    with monkeypatch.context() as patch, pytest.raises(Interrupted):  # after step 2 and its checkpoint
        interrupt_at_micro_batch(patch, 3)
        run(assets, tmp_path / "crashed", **options)
    run(assets, tmp_path / "crashed", resume_from_checkpoint="latest", **options)
    full, resumed = (load_file(tmp_path / name / "model.safetensors") for name in ("full", "crashed"))
    for name, value in full.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-6, msg=name)

    # A checkpoint of a run without the average has none to resume.
    run(assets, tmp_path / "plain", train_steps=2, save_every=2)
    with pytest.raises(ValueError, match=f"has no {EMA_WEIGHTS}: it was saved by a run without ema_decay"):
        run(assets, tmp_path / "plain", resume_from_checkpoint="latest", **options)


@pytest.mark.parametrize("values, error", [
    (dict(ema_decay=1.0), r"ema_decay must be in \[0, 1\), got 1.0"),
    (dict(ema_decay=-0.1), r"ema_decay must be in \[0, 1\), got -0.1"),
    (dict(ema_decay=0.9, ema_warmup_power=0), "ema_warmup_power must be > 0 or null, got 0"),
    (dict(ema_warmup_power=0.75), "ema_warmup_power is set, but ema_decay is 0"),
])
def test_config_errors(values, error):
    with pytest.raises(StrictDataclassError, match=error):
        TrainConfig(train_dataset="x", **values)
    assert TrainConfig(train_dataset="x").ema_decay == 0  # off by default: the raw weights, as open_clip
