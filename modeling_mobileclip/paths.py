"""Telling a mistyped local path from a Hub repo id.

The converter, the trainer and the dataset builder accept either a local path or a Hub id. A local path that does
not exist would otherwise be sent to the Hub and fail with a repo-id validation or offline error that never says
the file is missing; `check_local_path` raises `FileNotFoundError` naming it instead.
"""

import os
import re

# A Hub repo id: "name" or "namespace/name", of letters, digits, "-", "_" and ".".
_HUB_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")
# Extensions of the files these tools read. Hub ids may contain dots ("timm/fastvit_mci2.apple_mclip2_dfndr2b",
# "org/model-2.7b"), so only these count as a file name.
FILE_EXTENSIONS = (
    ".arrow", ".bin", ".ckpt", ".csv", ".gz", ".jpeg", ".jpg", ".json", ".jsonl", ".npy", ".npz", ".onnx",
    ".parquet", ".pkl", ".png", ".pt", ".pth", ".safetensors", ".tar", ".tgz", ".tsv", ".txt", ".zip",
)  # fmt: skip


def looks_like_local_path(name: str) -> bool:
    """Whether `name` can only be meant as a local path, not as a Hub repo id (or a URL such as `hf://...`).

    True when it starts with `/`, `.` or `~`, has a backslash or more than the one `/` of `namespace/name`, has
    characters a Hub id cannot have, or ends with a known file extension (`.pt`, `.safetensors`, `.parquet`, ...).
    """
    if "://" in name:
        return False
    if name.startswith(("/", ".", "~")) or os.path.isabs(name) or (os.altsep and os.altsep in name):
        return True
    return "\\" in name or not _HUB_ID.match(name) or name.lower().endswith(FILE_EXTENSIONS)


def is_hub_id(name: str) -> bool:
    """Whether `name` is taken for a Hub repo id: nothing local by that name, and not path-shaped."""
    return not os.path.exists(name) and not looks_like_local_path(name)


def check_local_path(name: str, what: str = "Path") -> None:
    """Raises `FileNotFoundError` naming `name` when it does not exist and looks like a local path, not a Hub id.

    Args:
        name: a local file or folder, or a Hub repo id (left alone).
        what: what `name` is, for the message, e.g. `"Checkpoint"` or `"train_dataset"`.
    """
    if os.path.exists(name) or is_hub_id(name):
        return
    hint = ""
    if name.startswith("~") and os.path.exists(os.path.expanduser(name)):
        hint = " (`~` is not expanded here; pass the full path)"
    raise FileNotFoundError(f"{what} {name!r}: no such file or folder{hint}.")


__all__ = ["FILE_EXTENSIONS", "check_local_path", "is_hub_id", "looks_like_local_path"]
