"""Stand-in for transformers' `tests/exporters/test_export.py`, which its sdist does not ship: no export tests."""


class ExportTesterMixin:
    pass
