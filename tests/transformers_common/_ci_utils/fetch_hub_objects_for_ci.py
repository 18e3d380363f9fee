"""Stand-in for transformers' `utils/fetch_hub_objects_for_ci.py`, which maps the mixins' Hub fixture URLs to files
pre-fetched by transformers' CI. The tests run offline: an image URL is mapped to a real photograph shipped with
matplotlib (`sample_data/grace_hopper.jpg`, 512x600 RGB JPEG) where matplotlib is installed, so that the tests
comparing backends on "a real image" compare them on one. Any other URL is returned unchanged (a test that really
loads it fails, and is skipped with that reason by the tester that runs it)."""

import os

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def _sample_photo():
    try:
        import matplotlib
    except ImportError:
        return None
    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    return path if os.path.isfile(path) else None


def url_to_local_path(url, *args, **kwargs):
    if isinstance(url, str) and url.lower().endswith(IMAGE_SUFFIXES):
        return _sample_photo() or url
    return url
