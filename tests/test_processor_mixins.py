"""transformers' own `ProcessorTesterMixin` on `MobileCLIPProcessor` (image processor + tokenizer), vendored from
the pinned transformers' sdist in `transformers_common/` (PROVENANCE.md). Every skip names its reason."""

import os
import unittest

import pytest

pytest.importorskip("parameterized", reason="transformers' test mixins need `parameterized` (the dev extra)")

import transformers  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_HERE, "transformers_common", "VERSION")) as _f:
    VENDORED_VERSION = _f.read().strip()
if transformers.__version__ != VENDORED_VERSION:
    pytest.skip(
        f"vendored test mixins are transformers {VENDORED_VERSION}'s, installed is {transformers.__version__}: "
        f"run `python tests/transformers_common/fetch.py --version {transformers.__version__}`",
        allow_module_level=True,
    )

from transformers_common.test_processing_common import ProcessorTesterMixin  # noqa: E402

from modeling_mobileclip import MobileCLIPImageProcessor, MobileCLIPProcessor, MobileCLIPTokenizer  # noqa: E402


class MobileCLIPProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    processor_class = MobileCLIPProcessor

    # The components are built here (no Hub checkpoint): the shipped BPE file and the MobileCLIP-S0 settings.
    @classmethod
    def _setup_tokenizer(cls):
        return MobileCLIPTokenizer()

    @classmethod
    def _setup_image_processor(cls):
        return MobileCLIPImageProcessor()
