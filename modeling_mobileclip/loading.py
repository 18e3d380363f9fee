"""Loading a model and its processor from a folder, a Hub id or a variant name, and reading what its image processor
does to pixels.

The exporter, the evaluation and the trainer load through `load_model` (the Auto classes, which importing this
package registers MobileCLIP with); teachers, training data and the exporter read an image processor's resolution
and normalisation through `image_preprocessing`.
"""

import os

from transformers import AutoConfig, AutoModel, AutoProcessor

from .configuration_mobileclip import (
    VARIANTS,
    MobileCLIPConfig,
    MobileCLIPTextConfig,
    MobileCLIPVisionConfig,
    normalize_variant,
)
from .paths import looks_like_local_path

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# An image processor's (alone), a processor's (image processor and tokenizer together).
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
MOBILECLIP_CONFIGS = (MobileCLIPConfig, MobileCLIPTextConfig, MobileCLIPVisionConfig)


def _variant_name(source: str) -> str | None:
    """The variant `source` names (a local file or folder of that name is not one), else None."""
    key = normalize_variant(source)
    return key if key in VARIANTS and not os.path.exists(source) else None


def _check_local_folder(source: str) -> None:
    if os.path.isdir(source):
        if not os.path.isfile(os.path.join(source, "config.json")):
            raise ValueError(f"{source!r} is not a saved model folder: it has no config.json.")
    elif looks_like_local_path(source):
        raise FileNotFoundError(f"Model folder {source!r} does not exist (nor is it a variant name or a Hub id).")


def load_model(source: str, random_init: bool = False, mobileclip_only: bool = False):
    """Loads a model (`AutoModel`) from a saved folder or Hub id with its weights.

    With `random_init=True` the source may instead be a released variant name or a folder holding only `config.json`:
    the architecture, randomly initialised (training from scratch, a chance-level baseline). Otherwise a source
    without weights is an error, so that a missing file never silently turns into a randomly initialised model.

    Args:
        source: a folder, a Hub id, or (with `random_init`) a name of `VARIANTS` (where no local folder has it).
        random_init: accept a source without weights and initialise the weights randomly.
        mobileclip_only: refuse, before loading any weights, a config that is not a MobileCLIP one (a full model or
            a single tower); otherwise any transformers CLIP-style model loads.

    Raises:
        FileNotFoundError: a local path that does not exist, or a folder without weights (and not `random_init`).
        ValueError: a variant name without `random_init`, a folder without config.json, or (`mobileclip_only`)
            another model type.
    """
    if _variant_name(source):
        if not random_init:
            raise ValueError(f"{source!r} is a variant name, not a trained model: pass random_init=True "
                             "(--random-init) for a randomly initialised one, or a folder / Hub id with weights")
        from .modeling_mobileclip import MobileCLIPModel

        return MobileCLIPModel(MobileCLIPConfig.from_variant(source))
    _check_local_folder(source)
    config = AutoConfig.from_pretrained(source)
    if mobileclip_only and not isinstance(config, MOBILECLIP_CONFIGS):
        raise ValueError(f"{source!r} is not a MobileCLIP model: config.json has model_type {config.model_type!r}, "
                         f"expected one of {', '.join(repr(c.model_type) for c in MOBILECLIP_CONFIGS)}.")
    if os.path.isdir(source) and not any(os.path.isfile(os.path.join(source, f)) for f in WEIGHT_FILES):
        if not random_init:
            raise FileNotFoundError(f"Model folder {source!r} has no weights (none of {', '.join(WEIGHT_FILES)}); "
                                    "pass random_init=True (--random-init) to use its config with random weights")
        return AutoModel.from_config(config)
    return AutoModel.from_pretrained(source, config=config)


def has_saved_processor(folder: str | None) -> bool:
    """Whether `folder` is a local folder with a saved image processor or processor."""
    return bool(folder) and os.path.isdir(folder) and any(
        os.path.isfile(os.path.join(folder, f)) for f in PROCESSOR_FILES)


def load_processor(source: str, config):
    """The processor saved with a model, else the released variant's, else one built from the model config.

    The tokenizer's length is capped at the model's context length (77 for every released model; test configs use
    fewer positions).
    """
    from .image_processing_mobileclip import MobileCLIPImageProcessor
    from .processing_mobileclip import MobileCLIPProcessor
    from .tokenization_mobileclip import MobileCLIPTokenizer

    variant = _variant_name(source) or getattr(config, "variant", None)
    if has_saved_processor(source) or (not os.path.isdir(source) and variant is None):
        processor = AutoProcessor.from_pretrained(source)
    elif variant is not None:
        processor = MobileCLIPProcessor.from_variant(variant)
    else:
        size = config.vision_config.image_size
        image_processor = MobileCLIPImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}
        )
        processor = MobileCLIPProcessor(image_processor, MobileCLIPTokenizer())
    context_length = config.text_config.max_position_embeddings
    processor.tokenizer.model_max_length = min(processor.tokenizer.model_max_length, context_length)
    return processor


def load_model_and_processor(source: str, random_init: bool = False):
    """`load_model` and `load_processor` of the same source."""
    model = load_model(source, random_init)
    return model, load_processor(source, model.config)


def saved_image_processor(model, model_dir: str | None = None):
    """The image processor saved beside the model (alone or in a processor), else its variant's, else None.

    Args:
        model: a loaded MobileCLIP model (its `name_or_path` and `config.variant` are used).
        model_dir: the folder it was loaded from (default `model.name_or_path`).

    Returns:
        `(image_processor, source)`, source `"saved processor"` or `"variant <name>"`; `(None, None)` if neither.
    """
    from .image_processing_mobileclip import MobileCLIPImageProcessor

    model_dir = model_dir or getattr(model, "name_or_path", None)
    if has_saved_processor(model_dir):
        return MobileCLIPImageProcessor.from_pretrained(model_dir), "saved processor"
    variant = getattr(model.config, "variant", None)
    if variant:
        return MobileCLIPImageProcessor.from_variant(variant), f"variant {variant}"
    return None, None


def _size(value) -> dict:
    """A size setting (`dict` or transformers' `SizeDict`) as a dict without unset entries."""
    items = value.items() if isinstance(value, dict) else vars(value).items() if value is not None else ()
    return {k: v for k, v in items if v is not None}


def image_preprocessing(image_processor) -> dict:
    """What a (transformers) image processor does to an image before the image tower, in one place.

    Returns:
        `image_size`: side of the square the tower sees (the crop when it center-crops, else the resize size);
        `image_mean`, `image_std`: tuples, or None when it does not normalise (MobileCLIP's: pixels stay in [0, 1]);
        `rescale_factor`: what uint8 values are multiplied by (1/255); `resample`: the PIL resampling filter (int).
    """
    crop = _size(getattr(image_processor, "crop_size", None))
    size = _size(getattr(image_processor, "size", None))
    if getattr(image_processor, "do_center_crop", True) is False:
        crop = {}
    image_size = crop.get("height") or size.get("height") or size.get("shortest_edge")
    normalize = bool(getattr(image_processor, "do_normalize", True)) and image_processor.image_mean is not None
    resample = getattr(image_processor, "resample", None)
    return dict(
        image_size=None if image_size is None else int(image_size),
        image_mean=tuple(image_processor.image_mean) if normalize else None,
        image_std=tuple(image_processor.image_std) if normalize else None,
        rescale_factor=getattr(image_processor, "rescale_factor", 1 / 255),
        resample=None if resample is None else int(resample),
    )


__all__ = [
    "PROCESSOR_FILES",
    "WEIGHT_FILES",
    "has_saved_processor",
    "image_preprocessing",
    "load_model",
    "load_model_and_processor",
    "load_processor",
    "saved_image_processor",
]
