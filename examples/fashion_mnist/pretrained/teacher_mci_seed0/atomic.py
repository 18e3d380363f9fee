"""Writing files so that a kill never leaves half of one behind.

Every tool of this project (converter, exporter, dataset builder, trainer) writes its outputs through
`atomic_path`: the content goes to a temporary name in the destination's folder, which is renamed onto the final
name (`os.replace`, atomic on POSIX within one file system) only once it is complete. A reader sees the old file or
the new one, never a partial one. Temporary names are `.<name>.tmp-<random>`, so `temporaries(folder)` finds what a
killed run left behind.
"""

import contextlib
import glob
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from typing import Any

TEMPORARY_INFIX = ".tmp-"


def temporary_name(path: str) -> str:
    """A fresh temporary path beside `path` (not created)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}{TEMPORARY_INFIX}{secrets.token_hex(6)}")


def temporaries(folder: str, name: str = "*") -> list[str]:
    """The temporary files or folders of `name` (a glob) that a killed writer left in `folder`."""
    return sorted(glob.glob(os.path.join(glob.escape(folder), f".{name}{TEMPORARY_INFIX}*")))


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def _make_readable(path: str) -> None:
    """Give the final file the permissions an ordinary `open` or `mkdir` would (some writers create 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path to write `path`'s content to (a file, or a folder the caller creates).

    On a clean exit the temporary is renamed onto `path` (a folder replaces only a missing or empty one); on an
    exception it is removed and `path` is left as it was.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        if not os.path.lexists(tmp):
            raise FileNotFoundError(f"nothing was written to the temporary {tmp} for {path}")
        _make_readable(tmp)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


@contextlib.contextmanager
def scratch_folder(path: str) -> Iterator[str]:
    """A new, empty folder beside `path` for intermediate files, deleted afterwards however the block ends.

    Nothing is renamed onto `path`: what is to stay is written elsewhere (through `atomic_path`). Named as
    `temporary_name`, so that `temporaries` finds what a killed run left behind.
    """
    folder = temporary_name(path)
    os.makedirs(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_json(path: str, obj: Any, **kwargs: Any) -> None:
    """Write `obj` as indented JSON to `path`, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, **kwargs)
        f.write("\n")
