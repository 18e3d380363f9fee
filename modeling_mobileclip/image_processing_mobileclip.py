"""MobileCLIP image processor: shortest-side resize, centre crop, [0, 1] pixels, per-checkpoint normalisation.

Built on `CLIPImageProcessorPil` because the PIL backend reproduces both reference transforms bit for bit, once the
centre-crop offset is rounded as torchvision rounds it (see `center_crop`): Apple's `Resize(size, BILINEAR) +
CenterCrop(size) + ToTensor()` (apple/ml-mobileclip `mobileclip/__init__.py`) and open_clip's
`image_transform(size, is_train=False, resize_mode="shortest")`. The torchvision backend differs by up to 1/255
(HF_CONVENTIONS §1.1).
"""

import PIL.Image
from transformers import CLIPImageProcessorPil
from transformers.image_utils import PILImageResampling, is_valid_image

from .configuration_mobileclip import get_variant


def check_images(images) -> None:
    """Raises a clear error for an empty list or anything that is not an image, a path/URL, or a list of them."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("`images` is an empty list: pass at least one image.")
        for image in images:
            check_images(image)
    elif not (is_valid_image(images) or isinstance(images, str)):
        raise TypeError(
            "Images must be PIL images, NumPy arrays, torch tensors, file paths or URLs (or a list of them), "
            f"got {type(images).__name__}."
        )


def _check_mode(image: PIL.Image.Image) -> PIL.Image.Image:
    # `convert("RGB")` clips 16-bit, 32-bit and float modes to 0-255, turning such an image nearly white without a
    # warning; only the user knows its range.
    if image.mode in ("I", "F") or image.mode.startswith("I;"):
        raise ValueError(
            f"PIL images in mode {image.mode!r} (16-bit or 32-bit integer or float values) are not supported: "
            "converting them to RGB would clip the values to 0-255. Scale the image to 8 bits yourself, e.g. "
            "`Image.fromarray((np.asarray(image) / image_max * 255).astype(np.uint8)).convert('RGB')`."
        )
    return image


def _to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """`image.convert("RGB")`, as open_clip does, with clear errors for the modes it cannot handle."""
    if _check_mode(image).mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as error:  # e.g. "La" (premultiplied alpha)
        raise ValueError(f"Cannot convert a PIL image in mode {image.mode!r} to RGB; convert it yourself.") from error


class MobileCLIPImageProcessor(CLIPImageProcessorPil):
    r"""Image processor of the MobileCLIP and MobileCLIP2 checkpoints.

    The defaults are those of MobileCLIP-S0/S1/S2 (and MobileCLIP2-S0/S2): shortest edge resized to 256 with bilinear
    interpolation, 256x256 centre crop, pixels rescaled to [0, 1] and *no* mean/std normalisation. Use
    `from_variant` for the other checkpoints (224 for the ViT towers, OpenAI mean/std for MobileCLIP2-S3/S4/L-14,
    bicubic for MobileCLIP2-L-14).

    PIL images in any 8-bit mode (L, LA, P, PA, RGBA, CMYK, YCbCr, ...) are first converted with
    `Image.convert("RGB")`: an alpha channel is dropped, not composited onto white as in `CLIPImageProcessor`. This
    is what Apple's examples (`Image.open(path).convert("RGB")`) and open_clip's training loader feed the model.
    open_clip's eval transform converts only after resizing, which gives the same pixels for L, LA, RGBX and opaque
    RGBA but not for P/1 (PIL resizes those with nearest neighbour), translucent RGBA, CMYK, YCbCr or HSV.
    16-bit and float modes (`I`, `I;16`, `F`) raise a `ValueError`. NumPy arrays and torch tensors (HWC or CHW) are
    accepted as in `CLIPImageProcessor`.

    Example:

    ```python
    >>> processor = MobileCLIPImageProcessor.from_variant("mobileclip2-l14")
    >>> processor(images=image, return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 224, 224])
    ```
    """

    resample = PILImageResampling.BILINEAR
    image_mean = None
    image_std = None
    size = {"shortest_edge": 256}
    crop_size = {"height": 256, "width": 256}
    do_normalize = False

    @classmethod
    def from_variant(cls, name: str, **kwargs) -> "MobileCLIPImageProcessor":
        """Builds the image processor a released checkpoint was trained with, e.g. `"mobileclip2-s4"`.

        Args:
            name: a key of `configuration_mobileclip.VARIANTS` (case-insensitive, `_` or `-`).
            **kwargs: overrides of any image-processor setting.
        """
        entry = get_variant(name)
        preprocess, image_size = entry["preprocess"], entry["vision"]["image_size"]
        settings = {
            "size": {"shortest_edge": image_size},
            "crop_size": {"height": image_size, "width": image_size},
            "resample": PILImageResampling[preprocess["resample"].upper()],
            "do_normalize": preprocess["image_mean"] is not None,
        }
        if settings["do_normalize"]:
            settings.update(image_mean=list(preprocess["image_mean"]), image_std=list(preprocess["image_std"]))
        return cls(**{**settings, **kwargs})

    def _prepare_images_structure(self, images, expected_ndims: int = 3):
        # Checked before transformers flattens the input, whose own errors do not say what was wrong.
        check_images(images)
        return super()._prepare_images_structure(images, expected_ndims=expected_ndims)

    def process_image(self, image, do_convert_rgb: bool | None = None, **kwargs):
        if isinstance(image, PIL.Image.Image):
            image = _to_rgb(image) if do_convert_rgb else _check_mode(image)
        return super().process_image(image, do_convert_rgb=do_convert_rgb, **kwargs)

    def center_crop(self, image, size, **kwargs):
        # torchvision's CenterCrop (Apple, open_clip) puts the crop at round(excess / 2), half to even; transformers
        # floors it. They differ by one pixel when the excess is odd and its half rounds up, e.g. a 1000x255 image
        # resized to 1003x256 (offset 374 vs 373). Images smaller than the crop need padding: left to transformers.
        height, width = image.shape[-2:]
        if height < size.height or width < size.width:
            return super().center_crop(image, size, **kwargs)
        top, left = round((height - size.height) / 2), round((width - size.width) / 2)
        return image[..., top : top + size.height, left : left + size.width]


__all__ = ["MobileCLIPImageProcessor", "check_images"]
