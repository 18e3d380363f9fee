"""CLIP and multi-modal reinforced-training (distillation) losses of MobileCLIP.

Port of Apple's open_clip patch (`apple/ml-mobileclip: training/open_clip_v2.patch`, `loss.py`: `DistillClipLoss`
with `--distill-average-after-softmax`, and `DRClipLoss`), run as open_clip's `--local-loss --gather-with-grad`:
each process scores its own rows against the columns of the whole global batch. With an autograd-aware all-gather
the DDP mean of the per-process gradients is exactly the gradient of the global-batch loss
(DDP averages gradients over processes; each process's loss already covers all columns), and a process only
builds `n_local x N` logits instead of `N x N`.

Per batch (MobileCLIP paper, https://arxiv.org/abs/2311.17049, Sec. 3), with student features U, V (L2-normalised)
and scale s:

    L_clip    = ½ [CE(s U Vᵀ, I) + CE(s V Uᵀ, I)]
    P_i2t     = mean_k softmax_row(σ_k Û_k V̂_kᵀ + b_k)         (P_t2i: roles of Û, V̂ swapped)
    L_distill = ½ [dist(P_i2t, s U Vᵀ) + dist(P_t2i, s V Uᵀ)],   dist(P, A) = -mean_i Σ_j P_ij log_softmax(A)_ij
    L         = w0 L_clip + w1 L_distill, summed over the real-caption and the synthetic-caption batch.

Pure torch + torch.distributed, so the training script may use accelerate or plain torchrun.
"""

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

try:  # torch >= 2.x: autograd-aware and not deprecated (torch.distributed.nn.functional.all_gather warns in 2.14)
    from torch.distributed._functional_collectives import all_gather_single as _all_gather_single
except ImportError:  # pragma: no cover - private module moved or missing
    _all_gather_single = None


def _rank_and_world_size(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """Rank and world size of `group`, or (0, 1) when torch.distributed is not initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _all_gather(tensor: Tensor, group: dist.ProcessGroup | None) -> Tensor:
    """Concatenate `tensor` from all ranks along dim 0; the backward pass sums (reduce-scatters) the gradients."""
    group = group or dist.group.WORLD
    if _all_gather_single is not None:
        return _all_gather_single(tensor.contiguous(), 0, group)
    return torch.cat(torch.distributed.nn.functional.all_gather(tensor, group=group), dim=0)


def gather_features(*features: Tensor, group: dist.ProcessGroup | None = None) -> tuple[Tensor, ...]:
    """All-gathers 2-D feature tensors along the batch dimension, keeping the autograd graph.

    Every rank must pass tensors with the same number of rows (use `drop_last=True`); the gathered rows are ordered
    by rank, so rank r's own rows sit at `[r * n, (r + 1) * n)`. Call it on detached tensors (or under
    `torch.no_grad()`) for targets that need no gradient.

    Args:
        *features: `(n, d_i)` tensors with the same `n`, e.g. `image_features, text_features`.
        group: process group; the default group when None.

    Returns:
        The `(world_size * n, d_i)` gathered tensors in the input order; the inputs themselves when not distributed
        or the world size is 1.
    """
    if _rank_and_world_size(group)[1] == 1:
        return features
    # One collective for all tensors: concatenate along the feature dim, gather along the batch, split back.
    gathered = _all_gather(torch.cat(features, dim=1), group)
    return gathered.split([f.shape[1] for f in features], dim=1)


def _soft_cross_entropy(target_probs: Tensor, logits: Tensor) -> Tensor:
    """`dist_loss` of the patch: -mean_i Σ_j P_ij log_softmax(A)_ij (= KL(P‖softmax A) + entropy of P)."""
    return -(target_probs * logits.log_softmax(dim=1)).sum(dim=1).mean()


def _as_per_teacher(value: float | Sequence[float], num_teachers: int, name: str) -> tuple[float, ...]:
    """Broadcasts a scalar to one value per teacher (the v1 run scripts pass one `--distill-logit-scale 100`)."""
    values = (float(value),) * num_teachers if isinstance(value, (int, float)) else tuple(map(float, value))
    if len(values) != num_teachers:
        raise ValueError(f"{name} has {len(values)} values for {num_teachers} teachers")
    return values


class ReinforcedCLIPLoss(nn.Module):
    """MobileCLIP's multi-modal reinforced training loss (`DRClipLoss`), or the plain CLIP loss.

    With `teacher_dims=None` the module is the plain CLIP baseline (open_clip `ClipLoss`): `loss` is the contrastive
    loss (summed over the real and, if given, synthetic captions), `loss_weights` are ignored and teacher inputs
    are rejected. Otherwise teacher embeddings are required.

    The teacher ensemble is "average after softmax": the stored embedding is the concatenation of the K teachers'
    individually L2-normalised embeddings, split by `teacher_dims`. Passing the total width as a single teacher
    (e.g. `teacher_dims=(1536,)`) gives the patch's mode without `--distill-average-after-softmax`.

    Args:
        teacher_dims: width of each teacher's slice of the stored embeddings, e.g. `(768, 768)` for DataCompDR.
        teacher_logit_scale: σ_k, one per teacher or one for all (DataCompDR 100; DFNDR `(70, 60)`).
        teacher_logit_bias: b_k, one per teacher or one for all; None means 0. A constant added to every logit of a
            row does not change its softmax, so this only exists to mirror the patch's `--distill-logit-bias`.
        loss_weights: `(w0, w1)` of `w0 * L_clip + w1 * L_distill` (`--distill-loss-weights`; MobileCLIP-S*
            `(0, 1)`, MobileCLIP-B `(0.25, 0.75)`).
        group: process group to gather over; the default group when None.
    """

    def __init__(
        self,
        teacher_dims: Sequence[int] | None = None,
        teacher_logit_scale: float | Sequence[float] = 100.0,
        teacher_logit_bias: float | Sequence[float] | None = None,
        loss_weights: tuple[float, float] = (0.0, 1.0),
        group: dist.ProcessGroup | None = None,
    ):
        super().__init__()
        self.teacher_dims = None if teacher_dims is None else tuple(int(d) for d in teacher_dims)
        self.group = group
        if self.teacher_dims is not None:
            num_teachers = len(self.teacher_dims)
            self.teacher_logit_scale = _as_per_teacher(teacher_logit_scale, num_teachers, "teacher_logit_scale")
            self.teacher_logit_bias = _as_per_teacher(
                0.0 if teacher_logit_bias is None else teacher_logit_bias, num_teachers, "teacher_logit_bias"
            )
        if len(loss_weights) != 2:
            raise ValueError(f"loss_weights must be (w_clip, w_distill), got {loss_weights}")
        self.loss_weights = tuple(float(w) for w in loss_weights)

    def teacher_probs(self, rows: Tensor, columns: Tensor) -> Tensor:
        """Target distribution `mean_k softmax_row(σ_k rows_k @ columns_kᵀ + b_k)` of the teacher ensemble.

        Computed in float32 or wider with autocast off: these are fixed targets, and bf16 rounds a cosine near 1 by
        up to ~2e-3, i.e. ~0.2 on a teacher logit at σ = 100.
        """
        dtype = torch.promote_types(rows.dtype, torch.float32)
        with torch.no_grad(), torch.autocast(rows.device.type, enabled=False):
            rows, columns = rows.to(dtype), columns.to(dtype)
            probs = [
                F.softmax(scale * r @ c.T + bias, dim=1)
                for r, c, scale, bias in zip(
                    rows.split(self.teacher_dims, dim=1),
                    columns.split(self.teacher_dims, dim=1),
                    self.teacher_logit_scale,
                    self.teacher_logit_bias,
                    strict=True,
                )
            ]
        return torch.stack(probs).mean(dim=0)

    def forward(
        self,
        image_features: Tensor,
        text_features: Tensor,
        logit_scale: Tensor | float,
        teacher_image_embeds: Tensor | None = None,
        teacher_text_embeds: Tensor | None = None,
        syn_text_features: Tensor | None = None,
        teacher_syn_text_embeds: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Computes this process's loss on its local rows against the globally gathered batch.

        Args:
            image_features: `(n, d)` L2-normalised student image features of the local batch.
            text_features: `(n, d)` L2-normalised student features of the real captions.
            logit_scale: the student's scale s, **already exponentiated** (`model.logit_scale.exp()`, as open_clip
                passes it); a 0-d tensor so that it receives a gradient.
            teacher_image_embeds: `(n, sum(teacher_dims))` stored teacher image embeddings (of the same
                augmentation as the student's image).
            teacher_text_embeds: `(n, sum(teacher_dims))` teacher embeddings of the real captions.
            syn_text_features: `(n, d)` student features of one synthetic caption per image (same images).
            teacher_syn_text_embeds: `(n, sum(teacher_dims))` teacher embeddings of those synthetic captions.

        Returns:
            `loss = contrastive_loss + distill_loss`, with `contrastive_loss = w0 * Σ L_clip` and
            `distill_loss = w1 * Σ L_distill` summed over the real and synthetic batches. The parts are logged
            weighted, as in the patch; `distill_loss` is 0 for the CLIP baseline. With several processes each
            returns its local loss: their mean is the global-batch loss, and DDP's gradient mean its gradient.
        """
        distill = self.teacher_dims is not None
        batches = [(text_features, teacher_text_embeds)]
        if syn_text_features is not None:
            batches.append((syn_text_features, teacher_syn_text_embeds))
        self._check_inputs(image_features, teacher_image_embeds, batches, teacher_syn_text_embeds)

        n = image_features.shape[0]
        rank, _ = _rank_and_world_size(self.group)
        image_all, *texts_all = gather_features(image_features, *(text for text, _ in batches), group=self.group)
        # Local rows i match global column rank * n + i.
        labels = torch.arange(n, device=image_features.device) + rank * n
        if distill:
            # Targets need no gradient, but must span the same global columns as the student logits.
            with torch.no_grad():
                teacher_image_all, *teacher_texts_all = gather_features(
                    teacher_image_embeds, *(teacher for _, teacher in batches), group=self.group
                )

        clip_terms, distill_terms = [], []
        for b, (text, teacher_text) in enumerate(batches):
            logits_i2t = logit_scale * image_features @ texts_all[b].T
            logits_t2i = logit_scale * text @ image_all.T
            clip_terms.append((F.cross_entropy(logits_i2t, labels) + F.cross_entropy(logits_t2i, labels)) / 2)
            if distill:
                probs_i2t = self.teacher_probs(teacher_image_embeds, teacher_texts_all[b])
                probs_t2i = self.teacher_probs(teacher_text, teacher_image_all)
                distill_terms.append(
                    (_soft_cross_entropy(probs_i2t, logits_i2t) + _soft_cross_entropy(probs_t2i, logits_t2i)) / 2
                )

        if distill:
            contrastive_loss = self.loss_weights[0] * sum(clip_terms)
            distill_loss = self.loss_weights[1] * sum(distill_terms)
        else:
            contrastive_loss = sum(clip_terms)
            distill_loss = torch.zeros_like(contrastive_loss)
        return {
            "loss": contrastive_loss + distill_loss,
            "contrastive_loss": contrastive_loss,
            "distill_loss": distill_loss,
        }

    def _check_inputs(
        self,
        image_features: Tensor,
        teacher_image_embeds: Tensor | None,
        batches: list[tuple[Tensor, Tensor | None]],
        teacher_syn_text_embeds: Tensor | None,
    ) -> None:
        """Raises ValueError on missing/unexpected teacher inputs or mismatched shapes (before any collective)."""
        if image_features.ndim != 2:
            raise ValueError(f"image_features must be (batch, dim), got shape {tuple(image_features.shape)}")
        n, d = image_features.shape
        if len(batches) == 1 and teacher_syn_text_embeds is not None:
            raise ValueError("teacher_syn_text_embeds was given without syn_text_features")
        for text, _ in batches:
            if text.shape != (n, d):
                raise ValueError(
                    f"text features of shape {tuple(text.shape)} do not match image_features "
                    f"{(n, d)}: batch sizes and feature dims must agree"
                )
        teachers = [teacher_image_embeds] + [teacher for _, teacher in batches]
        if self.teacher_dims is None:
            if any(t is not None for t in teachers):
                raise ValueError("teacher embeddings given, but the loss was built without teacher_dims (CLIP only)")
            return
        width = sum(self.teacher_dims)
        for name, t in zip(
            ("teacher_image_embeds", "teacher_text_embeds", "teacher_syn_text_embeds"), teachers, strict=False
        ):
            if t is None:
                raise ValueError(f"{name} is required for distillation (teacher_dims={self.teacher_dims})")
            if t.ndim != 2 or t.shape[0] != n:
                raise ValueError(f"{name} of shape {tuple(t.shape)} must have the batch size {n} of the features")
            if t.shape[1] != width:
                raise ValueError(f"{name} has width {t.shape[1]}, but teacher_dims {self.teacher_dims} sum to {width}")


__all__ = ["ReinforcedCLIPLoss", "gather_features"]
