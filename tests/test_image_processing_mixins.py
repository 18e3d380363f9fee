"""transformers' own `ImageProcessingTestMixin` on `MobileCLIPImageProcessor` (PIL backend) and
`MobileCLIPImageProcessorFast` (torchvision backend), vendored from the pinned transformers' sdist in
`transformers_common/` (PROVENANCE.md), once with the defaults of MobileCLIP-S0/S1/S2 (256, bilinear, no mean/std)
and once with those of MobileCLIP2-L-14 (224, bicubic, OpenAI mean/std). Every skip names its reason."""

import unittest

from vendored_mixins import require_vendored_mixins

require_vendored_mixins()

from transformers_common.test_image_processing_common import (  # noqa: E402
    ImageProcessingTester,
    ImageProcessingTestMixin,
)

from modeling_mobileclip import MobileCLIPImageProcessor, MobileCLIPImageProcessorFast  # noqa: E402
from modeling_mobileclip.configuration_mobileclip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD  # noqa: E402


class MobileCLIPImageProcessingTester(ImageProcessingTester):
    def __init__(self, parent, **kwargs):
        kwargs.setdefault("do_resize", True)
        kwargs.setdefault("size", {"shortest_edge": 20})
        kwargs.setdefault("do_center_crop", True)
        kwargs.setdefault("crop_size", {"height": 18, "width": 18})
        kwargs.setdefault("do_normalize", False)
        kwargs.setdefault("do_convert_rgb", True)
        super().__init__(parent, **kwargs)

    def _get_image_processing_classes(self):
        # The mixin looks the classes up in transformers' own mapping by the test folder's name.
        return {"pil": MobileCLIPImageProcessor, "torchvision": MobileCLIPImageProcessorFast}


def _unwrapped(test):
    """The mixin's test function under its decorators (`slow`, `require_*`), to run it where its needs are met."""
    while hasattr(test, "__wrapped__"):
        test = test.__wrapped__
    return test


class _MobileCLIPImageProcessingTests(ImageProcessingTestMixin):
    test_cast_dtype = True

    def test_pil_can_run_without_torchvision(self):
        self.skipTest(
            "torchvision is a hard dependency of the package (setup.py; timm imports it at import time), so there is "
            "no MobileCLIP install without it; the mixin's subprocess also loads the class by name alone, which a "
            "remote-code class needs trust_remote_code for"
        )

    def test_can_compile_torchvision_backend(self):
        # transformers marks it slow; it runs here wherever its accelerator is present.
        import torch

        if not torch.cuda.is_available():
            self.skipTest("torch.compile of the torchvision backend runs on a CUDA device (the mixin's requirement)")
        _unwrapped(ImageProcessingTestMixin.test_can_compile_torchvision_backend)(self)


class MobileCLIPImageProcessingTest(_MobileCLIPImageProcessingTests, unittest.TestCase):
    image_processor_tester_class = MobileCLIPImageProcessingTester


class OpenAINormalizedBicubicTester(MobileCLIPImageProcessingTester):
    def __init__(self, parent, **kwargs):
        kwargs.setdefault("resample", 3)  # bicubic
        kwargs.setdefault("do_normalize", True)
        kwargs.setdefault("image_mean", list(OPENAI_CLIP_MEAN))
        kwargs.setdefault("image_std", list(OPENAI_CLIP_STD))
        super().__init__(parent, **kwargs)


class MobileCLIPImageProcessingOpenAITest(_MobileCLIPImageProcessingTests, unittest.TestCase):
    image_processor_tester_class = OpenAINormalizedBicubicTester

