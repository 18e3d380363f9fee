"""MobileCLIP image processor: shortest-side resize, centre crop, [0, 1] pixels, per-checkpoint normalisation.

Built on `CLIPImageProcessorPil` because the PIL backend reproduces both reference transforms bit for bit, once the
centre-crop offset is rounded as torchvision rounds it (see `center_crop`): Apple's `Resize(size, BILINEAR) +
CenterCrop(size) + ToTensor()` (apple/ml-mobileclip `mobileclip/__init__.py`) and open_clip's
`image_transform(size, is_train=False, resize_mode="shortest")`. transformers' torchvision backend resizes
tensors (antialiased) and differs from PIL by up to 1/255.
"""

import base64
import io
import os

import numpy as np
import PIL.Image
import PIL.ImageOps
from transformers import CLIPImageProcessorPil
from transformers.image_transforms import _rescale_for_pil_conversion, get_resize_output_image_size, to_pil_image
from transformers.image_transforms import rescale as np_rescale
from transformers.image_utils import ChannelDimension, PILImageResampling, is_valid_image

from .configuration_mobileclip import get_variant

# 16-bit integer modes (16-bit grayscale PNG and TIFF decode to "I;16"): their range is known, so they are scaled to
# 8 bits by their top byte, as PIL itself does when it decodes 16-bit RGB(A) PNGs to "RGB"/"RGBA".
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
# Above this many pixels in the resized (not yet cropped) image, only the crop's source region is resized. An extreme
# aspect ratio would otherwise allocate the whole resized image first: a 1x20000 image at 256 is 256x5,120,000 pixels,
# gigabytes in memory. Below it the whole image is resized, as in the reference transforms, bit for bit.
MAX_RESIZED_PIXELS = 1 << 22


def check_images(images) -> None:
    """Raises a clear error for an empty list, a list holding no image at all, or anything that is not an image, a
    path/URL, or a (nested) list of them. Inner lists may be empty (`[[], [image]]`: a sample without an image, as
    multimodal processors batch them); the images are then flattened, as transformers does."""
    if isinstance(images, (list, tuple)) and len(images) == 0:
        raise ValueError("`images` is an empty list: pass at least one image.")
    if _count_images(images) == 0:
        raise ValueError("`images` holds only empty lists: pass at least one image.")


def _count_images(images) -> int:
    if isinstance(images, (list, tuple)):
        return sum(_count_images(image) for image in images)
    if not (is_valid_image(images) or isinstance(images, str)):
        raise TypeError(
            "Images must be PIL images, NumPy arrays, torch tensors, file paths or URLs (or a list of them), "
            f"got {type(images).__name__}."
        )
    return 1


def to_8bit(image: PIL.Image.Image) -> PIL.Image.Image:
    """A PIL image in an 8-bit mode: 16-bit modes scaled (value >> 8), 8-bit modes unchanged.

    Raises:
        ValueError: for 32-bit integer and float modes (`I`, `F`), whose value range only the user knows;
            `convert("RGB")` would clip them to 0-255 and turn such an image nearly white without a warning.
    """
    if image.mode in SIXTEEN_BIT_MODES:
        return PIL.Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
    if image.mode in ("I", "F") or image.mode.startswith("I;"):
        raise ValueError(
            f"PIL images in mode {image.mode!r} (32-bit integer or float values) are not supported: their range is "
            "unknown and converting them to RGB would clip the values to 0-255. Scale the image to 8 bits yourself, "
            "e.g. `Image.fromarray((np.asarray(image) / image_max * 255).astype(np.uint8)).convert('RGB')`."
        )
    return image


def to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """A decoded PIL image as 8-bit RGB: the one conversion used by the processor, training and the dataset builder.

    `image.convert("RGB")`, as open_clip and Apple's examples do, after `to_8bit` (16-bit scaled, 32-bit and float
    modes refused), with a clear error for the modes PIL cannot convert.
    """
    image = to_8bit(image)
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as error:  # e.g. "La" (premultiplied alpha)
        raise ValueError(f"Cannot convert a PIL image in mode {image.mode!r} to RGB; convert it yourself.") from error


def open_image(source: str, timeout: float | None = None) -> PIL.Image.Image:
    """A file path, http(s) URL or base64 string -> the decoded image, upright (EXIF orientation), in its own mode.

    Like transformers' `load_image`, except that it does not convert to RGB, which would clip 16-bit images before
    `to_rgb` could scale them.
    """
    if source.startswith(("http://", "https://")):
        # The standard library: a saved model's remote code may import nothing that is not installed (transformers
        # checks every import of the file, even inside functions).
        import urllib.request

        with urllib.request.urlopen(source, timeout=timeout) as response:
            data = response.read()
    elif os.path.isfile(source):
        with open(source, "rb") as f:
            data = f.read()
    else:
        try:
            data = base64.b64decode(source.split(",", 1)[1] if source.startswith("data:image/") else source)
            PIL.Image.open(io.BytesIO(data))
        except Exception as error:  # transformers' own message for a string that is no image source
            raise ValueError(
                "Incorrect image source. Must be a valid URL starting with `http://` or `https://`, a valid path to "
                f"an image file, or a base64 encoded string. Got {source[:200]!r}. Failed with {error}"
            ) from error
    try:
        image = PIL.Image.open(io.BytesIO(data))
        image.load()  # decodes now, so that a truncated file fails here, with its name
    except (OSError, SyntaxError, ValueError) as error:  # PIL's errors for undecodable data
        detail = str(error)
        if isinstance(error, PIL.UnidentifiedImageError):  # its message names a BytesIO, not the source
            detail = "empty file" if not data else "not in an image format PIL can identify"
        raise ValueError(f"Cannot decode the image {source[:200]!r}: {detail}") from error
    return PIL.ImageOps.exif_transpose(image)


def _check_array(image) -> None:
    # transformers would report NaN as "values outside the range [0, 1]" and an empty image as ZeroDivisionError.
    if isinstance(image, PIL.Image.Image):
        shape, finite = (image.height, image.width), True
    else:
        shape = tuple(image.shape)
        if hasattr(image, "is_floating_point"):  # torch tensor
            finite = not image.is_floating_point() or bool(image.isfinite().all())
        else:
            array = np.asarray(image)
            finite = array.dtype.kind not in "fc" or bool(np.isfinite(array).all())
    if 0 in shape:
        raise ValueError(f"Image of shape {shape} is empty.")
    if not finite:
        raise ValueError("Image contains NaN or infinite values.")


def crop_region_box(height: int, width: int, size, resample, crop_size) -> tuple[float, ...] | None:
    """The source region (PIL's `box`) of the centre crop of the shortest-edge resize of a `height` x `width`
    image, when the whole resized image would exceed `MAX_RESIZED_PIXELS`; `None` otherwise, and for settings other
    than a shortest-edge resize with a PIL filter, when the whole image is resized."""
    if not (size.shortest_edge and not size.longest_edge and isinstance(resample, (PILImageResampling, int))):
        return None
    new_height, new_width = get_resize_output_image_size(
        np.empty((1, height, width), dtype=np.uint8), size.shortest_edge, default_to_square=False,
        input_data_format=ChannelDimension.FIRST,
    )
    if (new_height * new_width <= MAX_RESIZED_PIXELS or new_height < crop_size.height
            or new_width < crop_size.width):
        return None
    # The crop box of `center_crop`, mapped back to source pixels.
    top = round((new_height - crop_size.height) / 2)
    left = round((new_width - crop_size.width) / 2)
    y_scale, x_scale = height / new_height, width / new_width
    return (left * x_scale, top * y_scale, min(width, (left + crop_size.width) * x_scale),
            min(height, (top + crop_size.height) * y_scale))


def resize_crop_region(image: np.ndarray, size, resample, crop_size) -> np.ndarray | None:
    """The centre crop of the shortest-edge resize of a channel-first `image`, computed by resizing only the crop's
    region of the source (`crop_region_box`) with PIL; `None` when the whole image is to be resized. Agrees with the
    full resize to within a few levels: the filter reads the same source pixels."""
    box = crop_region_box(*image.shape[-2:], size, resample, crop_size)
    if box is None:
        return None
    rescaled = _rescale_for_pil_conversion(image)  # float input in [0, 1], as transformers' resize
    pil = to_pil_image(image, do_rescale=rescaled, input_data_format=ChannelDimension.FIRST)
    crop = np.array(pil.resize((crop_size.width, crop_size.height), resample=resample, box=box))
    crop = np.moveaxis(crop[..., None] if crop.ndim == 2 else crop, -1, 0)
    return np_rescale(crop, 1 / 255) if rescaled else crop

class MobileCLIPImageInputs:
    """Input handling of both MobileCLIP image processors (PIL and torchvision backends), placed before the backend
    class in the bases: inputs checked with errors that name the problem, paths opened without clipping 16-bit files,
    PIL images converted as the reference pipelines convert them; and the defaults both share (MobileCLIP-S0/S1/S2's:
    shortest edge 256, bilinear, 256x256 centre crop, no mean/std)."""

    resample = PILImageResampling.BILINEAR
    image_mean = None
    image_std = None
    size = {"shortest_edge": 256}
    crop_size = {"height": 256, "width": 256}
    do_normalize = False

    def _prepare_images_structure(self, images, expected_ndims: int = 3):
        # Checked before transformers flattens the input, whose own errors do not say what was wrong.
        check_images(images)
        return super()._prepare_images_structure(images, expected_ndims=expected_ndims)

    def fetch_images(self, image_url_or_urls):
        # transformers' `load_image` converts to RGB while loading, which clips 16-bit files; `open_image` does not.
        if isinstance(image_url_or_urls, (list, tuple)):
            return [self.fetch_images(x) for x in image_url_or_urls]
        if isinstance(image_url_or_urls, str):
            return open_image(image_url_or_urls)
        return super().fetch_images(image_url_or_urls)

    def process_image(self, image, do_convert_rgb: bool | None = None, **kwargs):
        _check_array(image)
        if isinstance(image, PIL.Image.Image):
            image = to_rgb(image) if do_convert_rgb else to_8bit(image)
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


class MobileCLIPImageProcessor(MobileCLIPImageInputs, CLIPImageProcessorPil):
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
    16-bit images (mode `I;16`, e.g. a 16-bit grayscale PNG, also when given as a path) are scaled to 8 bits
    (value >> 8); 32-bit integer and float modes (`I`, `F`) raise a `ValueError`. NumPy arrays and torch tensors (HWC
    or CHW) are accepted as in `CLIPImageProcessor`; NaN, infinite values and empty images raise a `ValueError`.

    Resizing and cropping are bounded: for an extreme aspect ratio (a resized image above `MAX_RESIZED_PIXELS`) only
    the crop's region of the source is resized, within a few levels of the full resize.

    Example:

    ```python
    >>> processor = MobileCLIPImageProcessor.from_variant("mobileclip2-l14")
    >>> processor(images=image, return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 224, 224])
    ```
    """


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

    def _preprocess(self, images, do_resize, size, resample, do_center_crop, crop_size, **kwargs):
        # Resize and crop together, so that an extreme aspect ratio never materialises its whole resized image.
        if do_resize and do_center_crop:
            images = [self._resize_and_center_crop(image, size, resample, crop_size) for image in images]
            do_resize = do_center_crop = False
        return super()._preprocess(images, do_resize=do_resize, size=size, resample=resample,
                                   do_center_crop=do_center_crop, crop_size=crop_size, **kwargs)

    def _resize_and_center_crop(self, image: np.ndarray, size, resample, crop_size) -> np.ndarray:
        """`center_crop(resize(image))`; when the resized image would exceed `MAX_RESIZED_PIXELS`, only the crop's
        region of the source is resized (`resize_crop_region`)."""
        crop = resize_crop_region(image, size, resample, crop_size)
        if crop is not None:
            return crop
        return self.center_crop(self.resize(image, size=size, resample=resample), crop_size)



__all__ = [
    "MAX_RESIZED_PIXELS",
    "MobileCLIPImageProcessor",
    "check_images",
    "crop_region_box",
    "open_image",
    "resize_crop_region",
    "to_8bit",
    "to_rgb",
]
