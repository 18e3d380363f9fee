"""MobileCLIP processor: `MobileCLIPImageProcessor` and `MobileCLIPTokenizer` behind one call."""

from transformers import BatchFeature, ProcessorMixin
from transformers.image_utils import ImageInput
from transformers.processing_utils import ProcessingKwargs, Unpack
from transformers.tokenization_utils_base import PreTokenizedInput, TextInput

from .image_processing_mobileclip import MobileCLIPImageProcessor, check_images
from .image_processing_mobileclip_fast import MobileCLIPImageProcessorFast
from .tokenization_mobileclip import MobileCLIPTokenizer, check_text


class MobileCLIPProcessor(ProcessorMixin):
    r"""Wraps a `MobileCLIPImageProcessor` and a `MobileCLIPTokenizer` into a single processor.

    By default text is padded to the tokenizer's `model_max_length` (77) with id 0 and truncated (`text_kwargs`):
    open_clip's ids. Any other padding gives the same embeddings (the model pads to 77 itself).

    `from_pretrained(path, backend="torchvision")` loads the torchvision image processor
    (`MobileCLIPImageProcessorFast`, within 1/255 of the PIL one for bilinear checkpoints) instead of the PIL one.

    Args:
        image_processor: the image processor of the checkpoint (see `MobileCLIPImageProcessor.from_variant`).
        tokenizer: the tokenizer (`MobileCLIPTokenizer()` builds it from the shipped BPE file).

    Example:

    ```python
    >>> processor = MobileCLIPProcessor.from_variant("mobileclip-s2")
    >>> inputs = processor(images=image, text=["a photo of a cat"], return_tensors="pt")
    >>> inputs["input_ids"].shape, inputs["pixel_values"].shape
    (torch.Size([1, 77]), torch.Size([1, 3, 256, 256]))
    ```
    """

    # open_clip's call; the length is the tokenizer's model_max_length (77).
    text_kwargs = {"padding": "max_length", "truncation": True}

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer)

    @classmethod
    def from_variant(cls, name: str, **image_processor_kwargs) -> "MobileCLIPProcessor":
        """Builds the processor of a released checkpoint, e.g. `"mobileclip2-l14"`, with no download.

        Args:
            name: a key of `configuration_mobileclip.VARIANTS` (case-insensitive, `_` or `-`).
            **image_processor_kwargs: overrides of image-processor settings.
        """
        return cls(MobileCLIPImageProcessor.from_variant(name, **image_processor_kwargs), MobileCLIPTokenizer())

    def __call__(
        self,
        images: ImageInput | None = None,
        text: TextInput | PreTokenizedInput | list[TextInput] | list[PreTokenizedInput] | None = None,
        *args,
        **kwargs: Unpack[ProcessingKwargs],
    ) -> BatchFeature:
        """Preprocesses `images` into `pixel_values` and/or `text` into `input_ids` (77 wide by default) and
        `attention_mask`."""
        if images is None and text is None:
            raise ValueError("MobileCLIPProcessor needs `images`, `text` or both; got neither.")
        # Checked here because ProcessorMixin's own checks run first and do not name the offending type.
        if images is not None:
            check_images(images)
        if text is not None:
            check_text(text)
        return super().__call__(images, text, *args, **kwargs)

    def save_pretrained(self, save_directory, *args, **kwargs):
        # Saving with remote code sets `auto_map` on the processor itself (transformers' `custom_object_save`), and
        # `to_dict` would then carry it: the processor after saving is the processor before (the file has auto_map).
        had_auto_map = "auto_map" in self.__dict__
        try:
            return super().save_pretrained(save_directory, *args, **kwargs)
        finally:
            if not had_auto_map:
                self.__dict__.pop("auto_map", None)

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # transformers resolves sub-processors through AutoImageProcessor / AutoTokenizer, which only know these classes
        # once the package has registered them. Loading them directly also works for Hub remote code. The image
        # processor's backend is chosen as AutoImageProcessor chooses it, with the PIL one as MobileCLIP's default.
        backend, use_fast = kwargs.pop("backend", None), kwargs.pop("use_fast", None)
        if backend is None and use_fast is not None:
            backend = "torchvision" if use_fast else "pil"
        if backend not in (None, "pil", "torchvision"):
            raise ValueError(f"MobileCLIP image processors have the backends 'pil' and 'torchvision', not {backend!r}.")
        image_processor_class = MobileCLIPImageProcessorFast if backend == "torchvision" else MobileCLIPImageProcessor
        return [
            image_processor_class.from_pretrained(pretrained_model_name_or_path, **kwargs),
            MobileCLIPTokenizer.from_pretrained(pretrained_model_name_or_path, **kwargs),
        ]


__all__ = ["MobileCLIPProcessor"]
