"""Refreshes the vendored copy of transformers' common test mixins from its PyPI sdist.

transformers publishes `test_modeling_common.py` and the other mixins only in its source distribution, not in the
wheel. They are committed here (PROVENANCE.md) so that the conformance tests run offline and do not change under us;
run this script after bumping transformers in constraints.txt:

    python tests/transformers_common/fetch.py --version 5.24.0

It downloads the sdist with pip (PyPI only), copies VENDORED_FILES verbatim into this folder and rewrites
PROVENANCE.md. The hand-written stand-ins (`exporters/`, `generation/`, `utils/`, `_ci_utils/`) replace modules
the sdist does not ship and are left alone.
"""

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENDORED_FILES = [
    "LICENSE",
    "tests/test_configuration_common.py",
    "tests/test_image_processing_common.py",
    "tests/test_modeling_common.py",
    "tests/test_processing_common.py",
    "tests/test_sentencepiece_backend_mixin.py",
    "tests/test_tokenization_common.py",
    "tests/test_tokenizers_backend_mixin.py",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--version", required=True, help="transformers version, as pinned in constraints.txt")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", f"transformers=={args.version}", "--no-binary", ":all:",
             "--no-deps", "-d", tmp],
            check=True,
        )
        (sdist,) = Path(tmp).glob("transformers-*.tar.gz")
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        root = f"transformers-{args.version}/"
        with tarfile.open(sdist) as tar:
            for name in VENDORED_FILES:
                member = tar.extractfile(root + name)
                (HERE / Path(name).name).write_bytes(member.read())
    lines = [
        "# Provenance of the vendored transformers test mixins",
        "",
        f"Copied verbatim by `fetch.py` from the PyPI source distribution `{sdist.name}` "
        f"(sha256 `{digest}`), transformers {args.version}, licence Apache-2.0 (`LICENSE`, copied from the same "
        "archive). Files, from the archive's `tests/` folder, unmodified:",
        "",
        *[f"- `{Path(n).name}`" for n in VENDORED_FILES if n != "LICENSE"],
        "",
        "Hand-written stand-ins for modules the sdist does not ship (imported by the files above):",
        "",
        "- `exporters/test_export.py`: an empty `ExportTesterMixin` (torch.export tests are not run);",
        "- `generation/test_utils.py`: an empty `GenerationTesterMixin` (MobileCLIP does not generate);",
        "- `utils/test_configuration_utils.py`: `config_common_kwargs`, non-default values of `PreTrainedConfig`'s "
        "common attributes;",
        "- `_ci_utils/fetch_hub_objects_for_ci.py`: `url_to_local_path` maps an image URL to a real photograph shipped "
        "with matplotlib (`mpl-data/sample_data/grace_hopper.jpg`) where matplotlib is installed, any other URL to "
        "itself (the tests run offline).",
        "",
        "Run by `tests/test_transformers_mixins.py` (ModelTesterMixin, ConfigTester), "
        "`tests/test_tokenizer_mixins.py` (TokenizerTesterMixin), `tests/test_image_processing_mixins.py` "
        "(ImageProcessingTestMixin) and `tests/test_processor_mixins.py` (ProcessorTesterMixin). The mixins' Hub "
        "fixtures are replaced there: the tokenizer is built from the BPE file shipped with the package and the "
        "sample text of transformers' `tests/fixtures/sample_text.txt` (not in the sdist) is a short text of its own.",
        "",
    ]
    (HERE / "PROVENANCE.md").write_text("\n".join(lines))
    (HERE / "VERSION").write_text(args.version + "\n")  # checked against the installed transformers by the tests
    print(f"vendored transformers {args.version} test mixins into {HERE}")


if __name__ == "__main__":
    main()
