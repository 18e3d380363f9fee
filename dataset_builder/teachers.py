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
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from modeling_mobileclip import image_preprocessing
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


class Teacher(ABC):
    """What the builder and train.py's online distillation need from a teacher: a frozen network, its preprocessing,
    and L2-normalised image and text embeddings. A subclass sets ``model`` and calls this ``__init__`` for the rest;
    it implements ``_encode_image`` (normalised pixels), ``_encode_text`` (strings) and, for captions tokenised
    elsewhere (train.py's DataLoader workers), ``_encode_input_ids``.

    Attributes:
        model: The network, set by the subclass; the teacher runs on the device and in the dtype of its parameters.
        name: Identifier stored in the metadata (e.g. ``"openclip:ViT-L-14:openai"``).
        dim: Embedding width, as the model declares it.
        logit_scale: Temperature the teacher was trained with (exp of the learned log scale).
        image_size: Square input resolution the augmentations are replayed at.
        mean, std: Per-channel normalisation applied to ``[0, 1]`` pixels.
        interpolation: Resize interpolation of the replayed crop.
        max_batch: Images per forward pass (B x K replayed images can be thousands).
    """

    model: torch.nn.Module
    name: str
    dim: int
    logit_scale: float
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    max_batch: int

    def __init__(self, name: str, dim: int, logit_scale: float, image_size: int,
                 mean: Sequence[float] = OPENAI_CLIP_MEAN, std: Sequence[float] = OPENAI_CLIP_STD,
                 interpolation: str = "bicubic", max_batch: int = 256):
        self.name, self.dim, self.logit_scale, self.image_size = name, int(dim), float(logit_scale), int(image_size)
        self.mean, self.std = tuple(float(x) for x in mean), tuple(float(x) for x in std)
        self.interpolation, self.max_batch = interpolation, max_batch

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, dim={self.dim}, image_size={self.image_size})"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

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
    def embed_pixel_values(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``embed_images`` of pixels already normalised with ``mean`` and ``std`` (train.py's loader workers replay
        them, its training step normalises them on the device)."""
        pixel_values = pixel_values.to(self.device, self.dtype, non_blocking=True)
        chunks = [self._encode_image(chunk).float() for chunk in pixel_values.split(self.max_batch)]
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Return L2-normalised float32 embeddings ``(len(texts), dim)``."""
        return torch.nn.functional.normalize(self._encode_text(list(texts)).float(), dim=-1)

    @torch.no_grad()
    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``embed_texts`` of captions already tokenised with the teacher's tokenizer (``_encode_input_ids``)."""
        return torch.nn.functional.normalize(self._encode_input_ids(input_ids.to(self.device)).float(), dim=-1)

    def metadata(self) -> dict:
        return {"name": self.name, "dim": self.dim, "logit_scale": float(self.logit_scale)}

    @abstractmethod
    def _encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Un-normalised image embeddings of normalised pixels."""

    @abstractmethod
    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        """Un-normalised text embeddings of strings."""

    def _encode_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Un-normalised text embeddings of token ids; only for teachers whose captions can be tokenised apart."""
        raise NotImplementedError(f"{type(self).__name__} embeds strings only (embed_texts)")


def embedding_dim(config: Any) -> int:
    """Embedding width a transformers dual-encoder config declares: ``projection_dim`` (CLIP, MobileCLIP), else the
    text head's ``projection_size`` (SigLIP, whose image embeddings have that width too)."""
    dim = getattr(config, "projection_dim", None) or getattr(getattr(config, "text_config", None), "projection_size",
                                                              None)
    if not dim:
        raise ValueError(f"{type(config).__name__} declares no embedding width (projection_dim): pass dim=")
    return int(dim)


def text_context_length(tokenizer: Any, config: Any) -> int:
    """Caption length in tokens: the tokenizer's ``model_max_length``, at most the text tower's positions. A tokenizer
    saved without a length reports transformers' VERY_LARGE_INTEGER (1e30); the positions bound it then."""
    positions = getattr(getattr(config, "text_config", None), "max_position_embeddings", None)
    return min(tokenizer.model_max_length, positions) if positions else tokenizer.model_max_length


class PaddedTokenizer:
    """Captions -> ``input_ids`` padded to ``max_length`` (SigLIP was trained on max_length padding; CLIP ignores
    padding after EOT, so this is safe for both). Returns the tokenizer's dict, attention mask included."""

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, texts: list[str]) -> Any:
        return self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_length,
                              return_tensors="pt")


class TransformersTeacher(Teacher):
    """A transformers dual encoder (``get_image_features`` / ``get_text_features``) as a teacher.

    Args:
        model: The model (put it on its device and dtype first).
        tokenize: Callable mapping a list of strings to ``input_ids`` (a tensor) or a dict of tensors; typically
            ``PaddedTokenizer(tokenizer, max_length)``.
        name: Metadata name.
        image_size, mean, std, interpolation: Preprocessing; see ``from_pretrained`` for reading them from the
            checkpoint's image processor.
        logit_scale: Override of the model's learned scale (none learned: 100).
        dim: Embedding width; by default the one the model's config declares (``embedding_dim``).
    """

    def __init__(self, model: torch.nn.Module, tokenize: Callable[[list[str]], Any], name: str, image_size: int,
                 mean: Sequence[float] = OPENAI_CLIP_MEAN, std: Sequence[float] = OPENAI_CLIP_STD,
                 interpolation: str = "bicubic", logit_scale: float | None = None, dim: int | None = None):
        if logit_scale is None:
            scale = getattr(model, "logit_scale", None)
            logit_scale = float(scale.detach().exp()) if scale is not None else 100.0
        self.model, self.tokenize = model.eval(), tokenize
        super().__init__(name, dim or embedding_dim(model.config), logit_scale, image_size, mean, std, interpolation)

    @classmethod
    def from_pretrained(cls, model_id: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        **kwargs: Any) -> "TransformersTeacher":
        """Load model, tokenizer and preprocessing from a Hub id or a local folder (remote code allowed)."""
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        model = AutoModel.from_pretrained(model_id, dtype=dtype, trust_remote_code=True).to(device)
        tokenizer = AutoTokenizer.from_pretrained(model_id, trust_remote_code=True)
        proc = AutoImageProcessor.from_pretrained(model_id, trust_remote_code=True)
        tokenize = PaddedTokenizer(tokenizer, text_context_length(tokenizer, model.config))
        return cls.from_processor(model, tokenize, proc, f"hf:{model_id}", **kwargs)

    @classmethod
    def from_processor(cls, model: torch.nn.Module, tokenize: Callable[[list[str]], Any], image_processor: Any,
                       name: str, **kwargs: Any) -> "TransformersTeacher":
        """A loaded model with the preprocessing its image processor describes (``kwargs`` override it)."""
        prep = image_preprocessing(image_processor)
        image_size = kwargs.pop("image_size", None) or prep["image_size"] or 224
        # MobileCLIP's processors do not normalise (mean/std None): pixels stay in [0, 1], the identity normalisation.
        mean = prep["image_mean"] or (0.0, 0.0, 0.0)
        std = prep["image_std"] or (1.0, 1.0, 1.0)
        return cls(model, tokenize, name=name, image_size=image_size, mean=kwargs.pop("mean", mean),
                   std=kwargs.pop("std", std), **kwargs)

    def _encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return pooled_output(self.model.get_image_features(pixel_values=pixel_values))

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenize(texts)
        if isinstance(tokens, torch.Tensor):
            tokens = {"input_ids": tokens}
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return pooled_output(self.model.get_text_features(**tokens))

    def _encode_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return pooled_output(self.model.get_text_features(input_ids=input_ids))


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

        model = open_clip.create_model_and_transforms(model_name, pretrained=pretrained)[0]
        self.tokenizer = open_clip.get_tokenizer(model_name)
        size = model.visual.image_size
        size = size[0] if isinstance(size, (tuple, list)) else size
        mean = getattr(model.visual, "image_mean", None) or OPENAI_CLIP_MEAN
        std = getattr(model.visual, "image_std", None) or OPENAI_CLIP_STD
        if logit_scale is None:
            logit_scale = float(model.logit_scale.detach().exp())
        self.model = model.to(device=device, dtype=dtype).eval()
        # The architecture's declared width (`embed_dim`); a Hub model's config is not in open_clip's registry.
        dim = (open_clip.get_model_config(model_name) or {}).get("embed_dim") or model.visual.output_dim
        super().__init__(f"openclip:{model_name}:{pretrained}", dim, logit_scale, size, mean, std)

    def _encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixel_values)

    def _encode_text(self, texts: list[str]) -> torch.Tensor:
        return self._encode_input_ids(self.tokenizer(texts).to(self.device))

    def _encode_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(input_ids)


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

    def embed_images(self, views: dict[tuple[int, str], torch.Tensor]) -> torch.Tensor:
        """Concatenated embeddings ``(B, D)``, on the CPU, of uint8 views (``replay_views``, stacked over samples)."""
        return torch.cat([t.embed_images(views[(t.image_size, t.interpolation)]).cpu() for t in self.teachers], -1)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Concatenated embeddings ``(len(texts), D)``, on the CPU."""
        return torch.cat([t.embed_texts(texts).cpu() for t in self.teachers], dim=-1)

    def embed_pixel_values(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Concatenated embeddings ``(B, D)``, on the pixels' device, of pixels already preprocessed as every teacher
        wants them (one ``image_size``, ``mean``, ``std``; train.py's online distillation)."""
        return torch.cat([t.embed_pixel_values(pixel_values).to(pixel_values.device) for t in self.teachers], -1)

    def embed_input_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Concatenated embeddings ``(N, D)``, on the ids' device, of captions tokenised as every teacher wants them
        (one shared tokenizer; train.py's online distillation)."""
        return torch.cat([t.embed_input_ids(input_ids).to(input_ids.device) for t in self.teachers], -1)

    def metadata(self) -> list[dict]:
        return [t.metadata() for t in self.teachers]


MODEL_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def model_dtype(name: str | None, device: str | torch.device) -> torch.dtype:
    """The dtype teachers and captioner run in: ``name`` (a key of ``MODEL_DTYPES``), by default float16 on GPU and
    float32 on CPU."""
    return MODEL_DTYPES[name or ("float16" if torch.device(device).type == "cuda" else "float32")]


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
    "MODEL_DTYPES",
    "OpenCLIPTeacher",
    "PaddedTokenizer",
    "Teacher",
    "TeacherEnsemble",
    "TransformersTeacher",
    "embedding_dim",
    "load_teacher",
    "model_dtype",
    "replay_for_teacher",
    "replay_views",
    "text_context_length",
]
