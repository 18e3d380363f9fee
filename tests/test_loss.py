"""Tests of train/loss.py: exact values against a loop-based reference and open_clip, and a 2-process gloo run."""

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from train.loss import ReinforcedCLIPLoss, gather_features

N, D = 6, 8  # batch size and student feature width of the fixed-tensor tests
TIGHT = dict(rtol=1e-6, atol=0.0)



def clip_loss(u, v, s):
    """The plain CLIP loss: `ReinforcedCLIPLoss` with its default weights and no teacher targets."""
    return ReinforcedCLIPLoss()(u, v, s)["loss"]

def _normalize_per_teacher(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Stored teacher embeddings: each teacher's slice is L2-normalised on its own, then concatenated."""
    return torch.cat([F.normalize(part, dim=-1) for part in x.split(dims, dim=-1)], dim=-1)


def _make_inputs(dims: tuple[int, ...], n: int = N, seed: int = 0) -> dict[str, torch.Tensor]:
    """Fixed float64 student features, logit scale and per-teacher-normalised teacher embeddings."""
    g = torch.Generator().manual_seed(seed)
    student = {
        k: F.normalize(torch.randn(n, D, generator=g, dtype=torch.float64), dim=-1)
        for k in ("image_features", "text_features", "syn_text_features")
    }
    teacher = {
        k: _normalize_per_teacher(torch.randn(n, sum(dims), generator=g, dtype=torch.float64), dims)
        for k in ("teacher_image_embeds", "teacher_text_embeds", "teacher_syn_text_embeds")
    }
    return {**student, **teacher, "logit_scale": torch.tensor(14.0, dtype=torch.float64)}


# ---------------------------------------------------------------------------------------------------------------
# Independent reference: python floats and explicit loops; distillation written as per-teacher KL + entropy.
# ---------------------------------------------------------------------------------------------------------------


def _log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _reference_batch(u, v, s, tu, tv, dims, scales, biases) -> tuple[float, float]:
    """(L_clip, L_distill) of one batch. CE(mean_k p_k, q) = mean_k [KL(p_k‖q) + H(p_k)], computed in that form."""
    n, bounds = len(u), [(sum(dims[:k]), sum(dims[: k + 1])) for k in range(len(dims))]
    clip = distill = 0.0
    for a, b, ta, tb in ((u, v, tu, tv), (v, u, tv, tu)):  # image->text, then text->image
        for i in range(n):
            log_q = _log_softmax([s * _dot(a[i], b[j]) for j in range(n)])
            clip += -log_q[i] / (2 * n)
            for (lo, hi), scale, bias in zip(bounds, scales, biases, strict=True):
                log_p = _log_softmax([scale * _dot(ta[i][lo:hi], tb[j][lo:hi]) + bias for j in range(n)])
                kl = sum(math.exp(lp) * (lp - lq) for lp, lq in zip(log_p, log_q, strict=True))
                entropy = -sum(math.exp(lp) * lp for lp in log_p)
                distill += (kl + entropy) / (len(dims) * n * 2)
    return clip, distill


def _reference(inputs, dims, scales, biases, weights, synthetic) -> dict[str, float]:
    as_list = {k: v.tolist() for k, v in inputs.items()}
    texts = [("text_features", "teacher_text_embeds")]
    if synthetic:
        texts.append(("syn_text_features", "teacher_syn_text_embeds"))
    clip = distill = 0.0
    for text, teacher_text in texts:
        c, d = _reference_batch(
            as_list["image_features"],
            as_list[text],
            as_list["logit_scale"],
            as_list["teacher_image_embeds"],
            as_list[teacher_text],
            dims,
            scales,
            biases,
        )
        clip, distill = clip + c, distill + d
    out = {"contrastive_loss": weights[0] * clip, "distill_loss": weights[1] * distill}
    return {**out, "loss": out["contrastive_loss"] + out["distill_loss"]}


def _call(loss_fn: ReinforcedCLIPLoss, inputs: dict[str, torch.Tensor], synthetic: bool) -> dict[str, torch.Tensor]:
    if not synthetic:
        inputs = {k: v for k, v in inputs.items() if "syn" not in k}
    return loss_fn(**inputs)


# ---------------------------------------------------------------------------------------------------------------
# Single process
# ---------------------------------------------------------------------------------------------------------------

TEACHERS = {  # (teacher_dims, logit scales, logit biases)
    "1-teacher": ((12,), (100.0,), (0.0,)),
    "1-teacher-bias": ((12,), (100.0,), (-2.5,)),
    "2-teachers": ((5, 7), (70.0, 60.0), (0.5, -1.25)),
}


@pytest.mark.parametrize("synthetic", [False, True], ids=["real", "real+syn"])
@pytest.mark.parametrize("weights", [(0.0, 1.0), (0.25, 0.75), (1.0, 0.0)])
@pytest.mark.parametrize("teacher", TEACHERS.values(), ids=TEACHERS.keys())
def test_matches_loop_reference(teacher, weights, synthetic):
    dims, scales, biases = teacher
    inputs = _make_inputs(dims)
    loss_fn = ReinforcedCLIPLoss(dims, teacher_logit_scale=scales, teacher_logit_bias=biases, loss_weights=weights)
    out = _call(loss_fn, inputs, synthetic)
    expected = _reference(inputs, dims, scales, biases, weights, synthetic)
    for key, value in expected.items():
        torch.testing.assert_close(out[key], torch.tensor(value, dtype=torch.float64), **TIGHT, msg=key)


def test_scalar_teacher_scale_broadcasts():
    inputs = _make_inputs((5, 7))
    one = ReinforcedCLIPLoss((5, 7), teacher_logit_scale=100.0)(**inputs)
    two = ReinforcedCLIPLoss((5, 7), teacher_logit_scale=(100.0, 100.0))(**inputs)
    torch.testing.assert_close(one["loss"], two["loss"], rtol=0, atol=0)


def test_clip_matches_open_clip():
    open_clip_loss = pytest.importorskip("open_clip.loss")
    inputs = _make_inputs((12,))
    u, v, vs, s = (inputs[k] for k in ("image_features", "text_features", "syn_text_features", "logit_scale"))
    reference = open_clip_loss.ClipLoss()
    torch.testing.assert_close(clip_loss(u, v, s), reference(u, v, s), **TIGHT)
    # The baseline module (no teacher) sums the real and synthetic batches and reports no distillation.
    out = ReinforcedCLIPLoss()(u, v, s, syn_text_features=vs)
    torch.testing.assert_close(out["loss"], reference(u, v, s) + reference(u, vs, s), **TIGHT)
    assert out["distill_loss"].item() == 0.0


@pytest.mark.parametrize("bias", [0.0, 3.0], ids=["no-bias", "bias"])  # a per-teacher bias cannot change softmax
def test_one_teacher_matches_open_clip_distill(bias):
    open_clip_loss = pytest.importorskip("open_clip.loss")
    inputs = _make_inputs((12,))
    u, v, vs, s = (inputs[k] for k in ("image_features", "text_features", "syn_text_features", "logit_scale"))
    tu, tv, tvs = (inputs[k] for k in ("teacher_image_embeds", "teacher_text_embeds", "teacher_syn_text_embeds"))
    reference = open_clip_loss.DistillClipLoss()
    real = reference(u, v, s, tu, tv, 100.0, output_dict=True)
    syn = reference(u, vs, s, tu, tvs, 100.0, output_dict=True)

    unweighted = ReinforcedCLIPLoss((12,), 100.0, bias, loss_weights=(1.0, 1.0))(u, v, s, tu, tv)
    for key in ("contrastive_loss", "distill_loss"):
        torch.testing.assert_close(unweighted[key], real[key], **TIGHT, msg=key)
    # DRClipLoss of the patch: weighted DistillClipLoss of the real batch plus that of the synthetic batch.
    out = ReinforcedCLIPLoss((12,), 100.0, bias, loss_weights=(0.25, 0.75))(**inputs)
    for key, weight in (("contrastive_loss", 0.25), ("distill_loss", 0.75)):
        torch.testing.assert_close(out[key], weight * (real[key] + syn[key]), **TIGHT, msg=key)


def test_teacher_probs_ignore_autocast():
    inputs = _make_inputs((5, 7))
    tu, tv = (inputs[k].float() for k in ("teacher_image_embeds", "teacher_text_embeds"))
    loss_fn = ReinforcedCLIPLoss((5, 7), (70.0, 60.0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = loss_fn.teacher_probs(tu, tv)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, loss_fn.teacher_probs(tu, tv), rtol=0, atol=0)
    torch.testing.assert_close(under_autocast.sum(dim=1), torch.ones(N), rtol=0, atol=1e-6)


def test_gather_is_identity_without_process_group():
    a, b = torch.randn(3, 2), torch.randn(3, 5)
    gathered = gather_features(a, b)
    assert gathered[0] is a and gathered[1] is b


def test_input_errors():
    inputs = _make_inputs((5, 7))
    loss_fn = ReinforcedCLIPLoss((5, 7))
    with pytest.raises(ValueError, match="batch sizes"):
        loss_fn(**{**inputs, "text_features": inputs["text_features"][:-1]})
    with pytest.raises(ValueError, match="batch size"):
        loss_fn(**{**inputs, "teacher_text_embeds": inputs["teacher_text_embeds"][:-1]})
    with pytest.raises(ValueError, match="sum to 13"):
        ReinforcedCLIPLoss((5, 8))(**inputs)
    with pytest.raises(ValueError, match="teacher_syn_text_embeds is required"):
        loss_fn(**{**inputs, "teacher_syn_text_embeds": None})
    with pytest.raises(ValueError, match="without syn_text_features"):
        loss_fn(**{**inputs, "syn_text_features": None})
    with pytest.raises(ValueError, match="without teacher_dims"):
        ReinforcedCLIPLoss()(**inputs)
    with pytest.raises(ValueError, match="3 values for 2 teachers"):
        ReinforcedCLIPLoss((5, 7), teacher_logit_scale=(1.0, 2.0, 3.0))


# ---------------------------------------------------------------------------------------------------------------
# Two processes (gloo): local loss + autograd gather + DDP mean == global-batch loss and gradient
# ---------------------------------------------------------------------------------------------------------------

GLOBAL_BATCH, TEACHER_DIMS = 8, (3, 4)


class _TinyStudent(nn.Module):
    """Two linear "encoders" and a learned log-scale, shaped like a CLIP model's outputs."""

    def __init__(self):
        super().__init__()
        self.image = nn.Linear(6, 4)
        self.text = nn.Linear(5, 4)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def forward(self, images, texts, syn_texts):
        # As in the patch, the text encoder runs once on [real; synthetic] and the output is split.
        text_features = F.normalize(self.text(torch.cat([texts, syn_texts])), dim=-1)
        return F.normalize(self.image(images), dim=-1), *text_features.chunk(2), self.logit_scale.exp()


def _student_loss(student: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    u, v, vs, s = student(batch["images"], batch["texts"], batch["syn_texts"])
    loss_fn = ReinforcedCLIPLoss(TEACHER_DIMS, (70.0, 60.0), (0.5, -1.0), loss_weights=(0.25, 0.75))
    out = loss_fn(u, v, s, batch["teacher_images"], batch["teacher_texts"], vs, batch["teacher_syn_texts"])
    return {**out, "clip_only": clip_loss(u, v, s)}


def _ddp_worker(rank: int, world_size: int, port: int, workdir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        data = torch.load(os.path.join(workdir, "data.pt"))
        student = _TinyStudent().double()
        student.load_state_dict(data["state_dict"])
        model = DistributedDataParallel(student)
        n = GLOBAL_BATCH // world_size
        out = _student_loss(model, {k: v[rank * n : (rank + 1) * n] for k, v in data["batch"].items()})
        out["loss"].backward()  # DDP all-reduces (means) the gradients here
        result = {
            "world_size": dist.get_world_size(),
            "losses": {k: v.detach() for k, v in out.items()},
            "grads": {name: p.grad.clone() for name, p in student.named_parameters()},
        }
        torch.save(result, os.path.join(workdir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_single_process(tmp_path):
    g = torch.Generator().manual_seed(0)
    batch = {
        "images": torch.randn(GLOBAL_BATCH, 6, generator=g),
        "texts": torch.randn(GLOBAL_BATCH, 5, generator=g),
        "syn_texts": torch.randn(GLOBAL_BATCH, 5, generator=g),
    }
    for key in ("teacher_images", "teacher_texts", "teacher_syn_texts"):
        batch[key] = _normalize_per_teacher(torch.randn(GLOBAL_BATCH, sum(TEACHER_DIMS), generator=g), TEACHER_DIMS)
    batch = {k: v.double() for k, v in batch.items()}
    torch.manual_seed(0)
    student = _TinyStudent().double()
    torch.save({"batch": batch, "state_dict": student.state_dict()}, tmp_path / "data.pt")

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)

    expected = _student_loss(student, batch)  # one process, whole global batch
    expected["loss"].backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    # Rows on different ranks differ, so the local losses do too; their mean is the global-batch loss.
    assert not torch.allclose(ranks[0]["losses"]["loss"], ranks[1]["losses"]["loss"])
    for key, value in expected.items():
        mean_local = (ranks[0]["losses"][key] + ranks[1]["losses"][key]) / 2
        torch.testing.assert_close(mean_local, value.detach(), rtol=1e-5, atol=1e-7, msg=key)
    for name, param in student.named_parameters():
        for r in ranks:
            torch.testing.assert_close(r["grads"][name], param.grad, rtol=1e-5, atol=1e-7, msg=name)
