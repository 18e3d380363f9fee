"""MobileCLIP image processor, torchvision backend: `MobileCLIPImageProcessor`'s transform on (batched) tensors.

The same settings, checks and steps as the PIL processor (`image_processing_mobileclip.py`), computed with torchvision
on tensors, on CPU or on a GPU (`device=`). torchvision's antialiased resize of 8-bit images is PIL's convolution
resampling (the same filters, support and 8-bit rounding after each of the two passes); it differs from PIL only in
its fixed-point weights and, with Pillow >= 13, which resizes some shapes (tall images among them) vertically first,
in the order of the two passes. Pixels before normalisation agree with the PIL processor's, hence with Apple's and
open_clip's transforms, to within 1/255 for bilinear resizing (every MobileCLIP and MobileCLIP2 checkpoint but
MobileCLIP2-L-14) and 8/255 for bicubic (a few levels on photographs), with a mean difference under 0.5/255
(tests/test_image_processing_fast.py). The centre crop is placed as torchvision's
`CenterCrop` places it, as in the PIL processor. For an extreme aspect ratio (the resized image above
`MAX_RESIZED_PIXELS`, e.g. a 1x20000 image) only the crop's region of the source is resized, by PIL on the CPU
(`resize_crop_region`, exactly the PIL processor's pixels): torchvision has no fractional source box.

Like the other modules of the package it imports only its siblings, so it also works as Hub remote code.
"""

import torch
from transformers.image_processing_backends import TorchvisionBackend
from transformers.image_transforms import _rescale_for_pil_conversion, group_images_by_shape, reorder_images
from transformers.image_utils import PILImageResampling, torch_pil_interpolation_mapping

from .image_processing_mobileclip import (
    MobileCLIPImageInputs,
    MobileCLIPImageProcessor,
    crop_region_box,
    resize_crop_region,
)


def _to_pil_resample(resample):
    if resample is None:
        return PILImageResampling.BILINEAR
    if isinstance(resample, (PILImageResampling, int)):
        return PILImageResampling(resample)
    return torch_pil_interpolation_mapping[resample]


class MobileCLIPImageProcessorFast(MobileCLIPImageInputs, TorchvisionBackend):
    r"""Torchvision backend of `MobileCLIPImageProcessor`: the same defaults, settings, `from_variant`, input checks
    and conversions (16-bit images scaled, alpha dropped by `Image.convert("RGB")`), computed on tensors.

    `AutoImageProcessor.from_pretrained(path, backend="torchvision")` (or the deprecated `use_fast=True`) returns it;
    without a backend MobileCLIP checkpoints load the PIL processor, which is bit-exact with the reference
    transforms. Pixels agree with the PIL processor to within 1/255 (bilinear) or 8/255 (bicubic), see the module
    docstring; float inputs are brought to 8 bits before resizing exactly as the PIL processor brings them.
    One input is resized differently: a 4-channel image with `do_convert_rgb=False` (which no checkpoint takes) is
    resized channel by channel here, while PIL resizes RGBA with premultiplied alpha.

    Example:

    ```python
    >>> processor = MobileCLIPImageProcessorFast.from_variant("mobileclip2-s4")
    >>> processor(images=image, return_tensors="pt", device="cuda")["pixel_values"].shape
    torch.Size([1, 3, 256, 256])
    ```
    """

    # The backend's own defaults differ from CLIP's: these, with MobileCLIPImageInputs', make the two processors equal.
    default_to_square = False
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_convert_rgb = True

    from_variant = classmethod(MobileCLIPImageProcessor.from_variant.__func__)

    def _preprocess(self, images, do_resize, size, resample, do_center_crop, crop_size, **kwargs):
        # Resize and crop together, batched by shape; rescaling and normalisation are the base class's.
        if do_resize:
            grouped, index = group_images_by_shape(images, disable_grouping=kwargs.get("disable_grouping"))
            crop = crop_size if do_center_crop else None
            resized = {shape: self._resize_and_center_crop(stacked, size, resample, crop)
                       for shape, stacked in grouped.items()}
            images = reorder_images(resized, index)
            do_resize = do_center_crop = False
        return super()._preprocess(images, do_resize=do_resize, size=size, resample=resample,
                                   do_center_crop=do_center_crop, crop_size=crop_size, **kwargs)

    def _resize_and_center_crop(self, image: torch.Tensor, size, resample, crop_size) -> torch.Tensor:
        """`center_crop(resize(image))` of (..., C, H, W) images (no crop when `crop_size` is None), on 8-bit pixels
        as the PIL processor."""
        rescaled = False
        if image.is_floating_point():  # the PIL processor's conversion to a PIL image, and back after resizing
            rescaled = _rescale_for_pil_conversion(image.cpu().numpy())
            image = (image.float() * 255 if rescaled else image).to(torch.uint8)
        resample = _to_pil_resample(resample)
        resized = None
        if crop_size is not None and crop_region_box(*image.shape[-2:], size, resample, crop_size) is not None:
            flat = image.reshape(-1, *image.shape[-3:]).cpu().numpy()
            crops = [torch.from_numpy(resize_crop_region(one, size, resample, crop_size)) for one in flat]
            resized = torch.stack(crops).reshape(*image.shape[:-2], *crops[0].shape[-2:]).to(image.device)
        if resized is None:
            resized = self.resize(image, size=size, resample=resample)
            if crop_size is not None:
                resized = self.center_crop(resized, crop_size)
        if rescaled:
            resized = (resized.double() * (1 / 255)).float()
        return resized

    def to_dict(self):
        # Saved under the PIL processor's name, as transformers' own "...Pil" processors save theirs: the saved file
        # names the model's image processor, and the backend is chosen when loading (`backend=`).
        output = super().to_dict()
        if output.get("image_processor_type", "").endswith("Fast"):
            output["image_processor_type"] = output["image_processor_type"][: -len("Fast")]
        return output


__all__ = ["MobileCLIPImageProcessorFast"]
