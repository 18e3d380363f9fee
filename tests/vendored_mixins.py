"""The guard of the test modules that run transformers' own common test mixins, vendored in `transformers_common/`."""

import os

import pytest

VERSION_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "transformers_common", "VERSION")


def require_vendored_mixins() -> None:
    """Skip the calling test module unless the mixins can run: `parameterized` (the dev extra) is installed and the
    vendored files are the installed transformers' version (refresh them with `fetch.py` otherwise)."""
    pytest.importorskip("parameterized", reason="transformers' test mixins need `parameterized` (the dev extra)")
    import transformers

    with open(VERSION_FILE) as f:
        vendored = f.read().strip()
    if transformers.__version__ != vendored:
        pytest.skip(
            f"vendored test mixins are transformers {vendored}'s, installed is {transformers.__version__}: "
            f"run `python tests/transformers_common/fetch.py --version {transformers.__version__}`",
            allow_module_level=True,
        )
