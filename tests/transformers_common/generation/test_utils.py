"""Stand-in for transformers' `tests/generation/test_utils.py`, which its sdist does not ship.

`ModelTesterMixin` only checks whether a tester inherits from it; MobileCLIP does not generate.
"""


class GenerationTesterMixin:
    pass
