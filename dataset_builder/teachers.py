"""CLIP-style teachers for dataset reinforcement, and the ensemble that concatenates their embeddings.

A teacher turns stored augmentations and captions into L2-normalised embeddings. Each teacher replays the stored
augmentation parameters at its own resolution (``replay_for_teacher``) and applies its own normalisation, so the
embedding of augmentation k can be recomputed later from the source image and ``aug_params[k]`` alone. The ensemble
normalises every teacher's slice separately and concatenates the slices in teacher order (DataCompDR: OpenAI
ViT-L-14 first, then DataComp-XL ViT-L-14, 768 + 768 = 1536 dims).

Two kinds are built in: ``TransformersTeacher`` (any model with ``get_image_features`` / ``get_text_features``:
CLIP, SigLIP, this project's MobileCLIP) and ``OpenCLIPTeacher`` (open_clip, when installed).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from modeling_mobileclip.inference import pooled_output

from .augment import DEFAULT_INTERPOLATION, DEFAULT_OUTPUT_SIZE, apply_augmentation


def replay_for_teacher(image: Image.Image, params: Any, image_size: int,
                       aug_resolution: int = DEFAULT_OUTPUT_SIZE,
                       interpolation: InterpolationMode | str = DEFAULT_INTERPOLATION) -> torch.Tensor:
    """Replay one stored augmentation at a teacher's resolution and return a uint8 ``(3, S, S)`` tensor.

    The crop box is in source pixels, so it is resolution-free; RandAugment translations were sampled in pixels of
    the ``aug_resolution`` crop and are rescaled when the teacher's resolution differs, so that every teacher sees
    the same geometry (a no-op at the default 224 / 224).
    """
    ref = None if image_size == aug_resolution else aug_resolution
    out = apply_augmentation(image, params, image_size, interpolation, translate_ref_size=ref)
    return F.pil_to_tensor(out)


def replay_views(image: Image.Image, params: Sequence[Any], views: Sequence[tuple[int, str]],
                 aug_resolution: int = DEFAULT_OUTPUT_SIZE) -> dict[tuple[int, str], torch.Tensor]:
    """Replay every augmentation once per ``(resolution, interpolation)`` view: ``{view: uint8 (K, 3, S, S)}``."""
    return {(size, interp): torch.stack([replay_for_teacher(image, p, size, aug_resolution, interp) for p in params])
            for size, interp in views}


@dataclass
class Teacher(ABC):
    """Base class: subclasses implement ``_encode_image`` (normalised pixels) and ``_encode_text`` (strings).

    Attributes:
        name: Identifier stored in the metadata (e.g. ``"openclip:ViT-L-14:openai"``).
        dim: Embedding width.
        logit_scale: Temperature the teacher was trained with (exp of the learned log scale).
        image_size: Square input resolution the augmentations are replayed at.
        mean, std: Per-channel normalisation applied to ``[0, 1]`` pixels.
        interpolation: Resize interpolation of the replayed crop.
    """

    name: str
    dim: int
    logit_scale: float
    image_size: int
    mean: Sequence[float] = tuple(OPENAI_CLIP_MEAN)
    std: Sequence[float] = tuple(OPENAI_CLIP_STD)
    interpolation: str = "bicubic"
    max_batch: int = 256  # images per forward pass; B x K replayed images can be thousands

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device  # type: ignore[attr-defined]

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype  # type: ignore[attr-defined]

    def normalize(self, pixels_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, S, S)`` -> normalised float pixels on the teacher's device and dtype."""
        x = pixels_uint8.to(self.device, non_blocking=True).float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return ((x - mean) / std).to(self.dtype)

    @torch.no_grad()
    def embed_images(self, pixels_uint8: torch.Tensor) -> torch.Tensor:
        """Return L2-normalised float32 embeddings ``(B, dim)`` of uint8 images at ``image_size``."""
        chunks = [self._encode_image(self.normalize(chunk)).float() for chunk in pixels_uint8.split(self.max_batch)]
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Return L2-normalised float32 embeddings ``(len(texts), dim)``."""
        return torch.nn.functional.normalize(self._encode_text(list(texts)).float(), dim=-1)

    def metadata(self) -> dict:
        return {"name": self.name, "dim": self.dim, "logit_scale": float(self.logit_scale)}

    @abstractmethod
    def _encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Un-normalised image embeddings of normalised pixels."""

    @abstractmethod
    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        """Un-normalised text embeddings of strings."""


class TransformersTeacher(Teacher):
    """A transformers dual encoder (``get_image_features`` / ``get_text_features``) as a teacher.

    Args:
        model: The model (put it on its device and dtype first).
        tokenize: Callable mapping a list of strings to ``input_ids`` (a tensor) or a dict of tensors; typically
            ``lambda t: tokenizer(t, padding="max_length", truncation=True, return_tensors="pt")``.
        name: Metadata name.
        image_size, mean, std, interpolation: Preprocessing; see ``from_pretrained`` for reading them from the
            checkpoint's image processor.
    """

    def __init__(self, model: torch.nn.Module, tokenize: Callable[[list[str]], Any], name: str, image_size: int,
                 mean: Sequence[float] = OPENAI_CLIP_MEAN, std: Sequence[float] = OPENAI_CLIP_STD,
                 interpolation: str = "bicubic", logit_scale: float | None = None):
        self.model = model.eval()
        self.tokenize = tokenize
        if logit_scale is None:
            scale = getattr(model, "logit_scale", None)
            logit_scale = float(scale.detach().exp()) if scale is not None else 100.0
        with torch.no_grad():
            dim = int(self._encode_text(["a"]).shape[-1])
        super().__init__(name, dim, logit_scale, int(image_size), tuple(mean), tuple(std), interpolation)

    @classmethod
    def from_pretrained(cls, model_id: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        **kwargs: Any) -> "TransformersTeacher":
        """Load model, tokenizer and preprocessing from a Hub id or a local folder (remote code allowed)."""
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(model_id, dtype=dtype, trust_remote_code=True).to(device)
        tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=True)
        proc = AutoImageProcessor.from_pretrained(model_id, trust_remote_code=True)
        size = getattr(proc, "crop_size", None) or getattr(proc, "size", None) or {}
        image_size = kwargs.pop("image_size", None) or size.get("height") or size.get("shortest_edge") or 224
        max_len = tokenizer.model_max_length if tokenizer.model_max_length < 10_000 else 77

        def tokenize(texts: list[str]) -> Any:
            # SigLIP was trained on max_length padding; CLIP ignores padding after EOT, so this is safe for both.
            return tokenizer(texts, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")

        # MobileCLIP's processors do not normalise (do_normalize False, mean/std None): pixels stay in [0, 1].
        normalize = getattr(proc, "do_normalize", True) and getattr(proc, "image_mean", None) is not None
        mean = getattr(proc, "image_mean", OPENAI_CLIP_MEAN) if normalize else (0.0, 0.0, 0.0)
        std = getattr(proc, "image_std", OPENAI_CLIP_STD) if normalize else (1.0, 1.0, 1.0)
        return cls(model, tokenize, name=f"hf:{model_id}", image_size=image_size,
                   mean=kwargs.pop("mean", mean), std=kwargs.pop("std", std), **kwargs)

    def _encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pooled_output(self.model.get_image_features(pixel_values=pixel_values))

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenize(texts)
        device = next(self.model.parameters()).device
        if isinstance(tokens, torch.Tensor):
            tokens = {"input_ids": tokens}
        tokens = {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return pooled_output(self.model.get_text_features(**tokens))


class OpenCLIPTeacher(Teacher):
    """An open_clip model as a teacher (DataCompDR's default: ``ViT-L-14`` ``openai`` and ``datacomp_xl_s13b_b90k``).

    Args:
        model_name: open_clip architecture, e.g. ``"ViT-L-14"``.
        pretrained: open_clip pretrained tag or checkpoint path; None for random weights (benchmarks).
        device, dtype: Where and how the teacher runs (fp16/bf16 on GPU).
        logit_scale: Override of the model's learned scale (DataCompDR uses 100 for both teachers).
    """

    def __init__(self, model_name: str, pretrained: str | None = None, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, logit_scale: float | None = None):
        import open_clip

        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)
        self.model = model.to(device=device, dtype=dtype).eval()
        self.tokenizer = open_clip.get_tokenizer(model_name)
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        mean = getattr(model.visual, "image_mean", None) or OPENAI_CLIP_MEAN
        std = getattr(model.visual, "image_std", None) or OPENAI_CLIP_STD
        if logit_scale is None:
            logit_scale = float(model.logit_scale.detach().exp())
        dim = int(self._encode_text(["a"]).shape[-1])
        super().__init__(f"openclip:{model_name}:{pretrained}", dim, logit_scale, int(size), mean, std)

    def _encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values)

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        return self.model.encode_text(self.tokenizer(texts).to(device))


class TeacherEnsemble:
    """Several teachers whose per-teacher L2-normalised embeddings are concatenated in order.

    Args:
        teachers: The teachers; their order fixes the layout of the stored embeddings.
        aug_resolution: Resolution the augmentation parameters were sampled at (translate magnitudes).
    """

    def __init__(self, teachers: Sequence[Teacher], aug_resolution: int = DEFAULT_OUTPUT_SIZE):
        if not teachers:
            raise ValueError("at least one teacher is needed")
        self.teachers = list(teachers)
        self.aug_resolution = aug_resolution

    @property
    def dim(self) -> int:
        return sum(t.dim for t in self.teachers)

    @property
    def views(self) -> list[tuple[int, str]]:
        """Distinct ``(resolution, interpolation)`` pairs: augmentations are replayed once per pair."""
        return sorted({(t.image_size, t.interpolation) for t in self.teachers})

    def replay(self, image: Image.Image, params: Sequence[Any]) -> dict[tuple[int, str], torch.Tensor]:
        """Replay every augmentation once per view (see ``replay_views``)."""
        return replay_views(image, params, self.views, self.aug_resolution)

    def embed_images(self, views: dict[tuple[int, str], torch.Tensor]) -> torch.Tensor:
        """Concatenated embeddings ``(B, D)`` from replayed views (as returned by ``replay``, stacked over samples)."""
        return torch.cat([t.embed_images(views[(t.image_size, t.interpolation)]).cpu() for t in self.teachers], -1)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Concatenated embeddings ``(len(texts), D)``."""
        return torch.cat([t.embed_texts(texts).cpu() for t in self.teachers], dim=-1)

    def metadata(self) -> list[dict]:
        return [t.metadata() for t in self.teachers]


def load_teacher(spec: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> Teacher:
    """Build a teacher from a CLI spec: ``openclip:<model>:<pretrained>`` or ``hf:<hub id or folder>``."""
    kind, _, rest = spec.partition(":")
    if kind == "openclip":
        model_name, _, pretrained = rest.partition(":")
        return OpenCLIPTeacher(model_name, pretrained or None, device=device, dtype=dtype)
    if kind == "hf":
        return TransformersTeacher.from_pretrained(rest, device=device, dtype=dtype)
    raise ValueError(f"unknown teacher spec {spec!r}; use 'openclip:<model>:<pretrained>' or 'hf:<id or path>'")


__all__ = [
    "OpenCLIPTeacher",
    "Teacher",
    "TeacherEnsemble",
    "TransformersTeacher",
    "load_teacher",
    "replay_for_teacher",
    "replay_views",
]
