"""Writing files so that a reader never sees half of one (standard library only).

Every writer in cainfer goes through :func:`atomic_path`: the data go to a
hidden temporary file beside the target, which then replaces the target in
one ``os.replace``. A process killed mid-write leaves at most a temporary
file, whose name :func:`is_temporary` recognises, so a resumed run can sweep
them up.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# ".<target name>.<pid>-<8 hex>.tmp<target suffix>": the suffix is kept because some
# writers (matplotlib) choose the format from it
_TEMP = re.compile(r"^\..+\.\d+-[0-9a-f]{8}\.tmp(\.[A-Za-z0-9]+)?$")


def temporary_name(path: Path) -> Path:
    """A fresh temporary path beside ``path`` that :func:`is_temporary` recognises."""
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


def is_temporary(name: str) -> bool:
    """Whether a file name is one of :func:`temporary_name`'s."""
    return bool(_TEMP.match(name))


def not_one_name(text: str) -> bool:
    """Whether ``text`` cannot serve as one file or folder name inside a folder.

    Empty or blank, ``.`` or ``..``, a path separator or a control character:
    joined to a folder, such a name would leave it or make nested folders.
    """
    return (
        not text.strip()
        or text in (".", "..")
        or any(c in text for c in "/\\")
        or any(ord(c) < 32 for c in text)
    )


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    The parent folder is created. On any error the temporary file is removed
    and ``path`` is left as it was.

    Parameters
    ----------
    path : path
        The file to (re)write.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def sweep_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files a killed writer left under ``folder``; return them."""
    gone = []
    for p in folder.rglob(".*"):
        if p.is_file() and is_temporary(p.name):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone
