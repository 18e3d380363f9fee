"""transformers' own `TokenizerTesterMixin` (with its tokenizers-backend mixin) on `MobileCLIPTokenizer`, vendored
from the pinned transformers' sdist in `transformers_common/` (PROVENANCE.md). Every skip names its reason."""

import shutil
import tempfile
import unittest

from vendored_mixins import require_vendored_mixins

require_vendored_mixins()

from transformers_common.test_tokenization_common import TokenizerTesterMixin  # noqa: E402

from modeling_mobileclip import MobileCLIPTokenizer  # noqa: E402

# The mixin reads its sample text from transformers' `tests/fixtures/sample_text.txt`, which the sdist does not ship.
SAMPLE_TEXT = (
    "This text is included to make sure Unicode is handled properly: 力加勝北区ᴵᴺᵀᵃছজটডণত\n"
    "Text should be one-sentence-per-line, with empty lines between documents.\n"
    "This sample text is public domain and was randomly selected from Project Guttenberg.\n"
    "The rain had only ceased with the gray streaks of morning at Blazing Star, and the settlement awoke to a moral "
    "sense of cleanliness, and the finding of forgotten knives, tin cups, and smaller camp utensils."
)


class MobileCLIPTokenizationTest(TokenizerTesterMixin, unittest.TestCase):
    tokenizer_class = MobileCLIPTokenizer
    test_seq2seq = False

    @classmethod
    def setUpClass(cls):
        # The mixin's own setUpClass loads `from_pretrained_id` from the Hub and reads a fixture file; here the
        # tokenizer is built from the BPE file shipped with the package and saved once.
        cls.from_pretrained_id = []
        cls.tokenizers_list = []
        cls._data = SAMPLE_TEXT
        cls.tmpdirname = tempfile.mkdtemp()
        MobileCLIPTokenizer().save_pretrained(cls.tmpdirname)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmpdirname, ignore_errors=True)

    def test_padding_to_multiple_of(self):
        # The mixin truncates to `model_max_length` while padding to a multiple of 8; 77 (open_clip's context) is not
        # one, and transformers rightly refuses that combination. The same checks run with a context of 80.
        get_tokenizer = self.get_tokenizer
        self.get_tokenizer = lambda **kwargs: get_tokenizer(**{"model_max_length": 80, **kwargs})
        super().test_padding_to_multiple_of()

    def test_conversion_reversible(self):
        # transformers marks it slow (every token of the 49,408-token vocabulary, both ways); it takes seconds here.
        test = TokenizerTesterMixin.test_conversion_reversible
        while hasattr(test, "__wrapped__"):
            test = test.__wrapped__
        test(self)
