# The vendored mixins are imported by tests/test_transformers_mixins.py, not collected on their own (some define
# unittest classes of transformers' own that test transformers, not MobileCLIP).
collect_ignore_glob = ["*.py", "*/*.py"]
