"""transformers' own `ProcessorTesterMixin` on `MobileCLIPProcessor` (image processor + tokenizer), vendored from
the pinned transformers' sdist in `transformers_common/` (PROVENANCE.md). Every skip names its reason."""

import unittest

from vendored_mixins import require_vendored_mixins

require_vendored_mixins()

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
