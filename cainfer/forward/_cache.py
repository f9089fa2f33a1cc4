"""Where cainfer keeps what it compiles: one cache directory per user, never the package.

``cache_dir()`` is ``$CAINFER_CACHE_DIR``, else ``$XDG_CACHE_HOME/cainfer``,
else ``~/.cache/cainfer``. Under it:

- ``kernels/``: solver kernels generated per model (:mod:`._specialize`),
  with numba's machine code for them in each package's ``__pycache__``;
- ``numba/``: numba's machine code for the kernels that ship in the package
  (numba would otherwise write it into the installed package's
  ``__pycache__``, which may be read-only or shared between users);
- ``pytensor-src/``: the Python source PyTensor generates for the compiled log
  density (PyTensor otherwise leaves one file per function in ``$TMPDIR``).

Deleting the directory is always safe: everything in it is rebuilt on demand.
Where it cannot be written (a read-only home directory, a container run as
another user), a private temporary directory stands in for it, with a
warning: what is compiled then lasts for the process only, and the directory
is removed when the process exits.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

_USED: dict[str, Path] = {}  # configured root -> the root used (itself, or a private stand-in)
_USED_LOCK = threading.Lock()


def configured_cache_dir() -> Path:
    """The cache root the environment names (see the module docstring), writable or not."""
    env = os.environ.get("CAINFER_CACHE_DIR")
    if env:
        # absolute from the start: a worker that changes directory caches in the same place
        return Path(env).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # a relative XDG_CACHE_HOME is invalid (XDG Base Directory Specification): ignored
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "cainfer"


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def cache_dir() -> Path:
    """Root of cainfer's on-disk cache: :func:`configured_cache_dir` where it can be written.

    Otherwise a private temporary directory, created once per process and
    configured root, removed when the process exits; a RuntimeWarning names
    the root that could not be written. Without it numba would refuse to
    load cainfer's kernels at all (no cache location for them).
    """
    configured = configured_cache_dir()
    key = str(configured)
    used = _USED.get(key)
    if used is not None:
        return used
    with _USED_LOCK:
        if key not in _USED:
            if _writable(configured):
                _USED[key] = configured
            else:
                private = Path(tempfile.mkdtemp(prefix="cainfer-cache-"))
                atexit.register(shutil.rmtree, private, ignore_errors=True)
                warnings.warn(
                    f"cainfer cannot write its compile cache under {configured}: what it "
                    f"compiles is kept in {private} for this process only (removed at exit). "
                    "Set CAINFER_CACHE_DIR to a writable directory to keep it between runs.",
                    RuntimeWarning,
                    stacklevel=2,
                )
                _USED[key] = private
        return _USED[key]


_PACKAGE = Path(__file__).resolve().parents[1]  # the installed ``cainfer`` directory
_STAMP: list[str] = []


def kernel_sources_stamp() -> str:
    """Hash of every source file in ``cainfer/forward`` (hex), computed once per process.

    numba checks a cached function against its own file only, but a kernel
    compiled with ``cache=True`` carries the machine code of every jitted
    function it calls, from other files too (the flux terms of
    ``_builtin_terms`` inside ``_kernels``' right-hand side). Machine code
    cached by an older version whose calls changed while the caller's file did
    not would be served stale, so every cache entry of cainfer's kernels is
    also keyed by this stamp: any change to the solver's sources compiles them
    all afresh.
    """
    if not _STAMP:
        h = hashlib.sha256()
        for f in sorted((_PACKAGE / "forward").glob("*.py")):
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
        _STAMP.append(h.hexdigest())
    return _STAMP[0]


def _install_numba_locator() -> bool:
    """Send numba's on-disk cache of cainfer's own kernels to ``cache_dir()/numba``.

    numba picks a cache location per function from an ordered list of
    locator classes; PyTensor adds its own the same way. The one added here
    claims only source files inside the cainfer package, and only when the
    user has not chosen a numba cache directory (``NUMBA_CACHE_DIR``); when
    the directory cannot be written, numba's own locators decide. Returns
    False (and numba keeps its defaults) if numba's internals are not the
    ones this was written against.
    """
    try:
        from numba.core import caching, config
    except ImportError:  # pragma: no cover - numba is a dependency
        return False
    base = getattr(caching, "_CacheLocator", None)
    mixin = getattr(caching, "_SourceFileBackedLocatorMixin", None)
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    classes = getattr(impl, "_locator_classes", None)
    if base is None or mixin is None or not isinstance(classes, list):
        return False
    if any(getattr(c, "_cainfer", False) for c in classes):
        return True

    class CainferCacheLocator(mixin, base):  # type: ignore[misc, valid-type]
        """numba cache of functions defined in cainfer's own source files."""

        _cainfer = True

        def __init__(self, py_func: Any, py_file: str) -> None:
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            # named by the module's place in the package, not by where the package
            # lies (numba's default hashes the absolute directory): a new checkout, venv
            # or reinstall of the same source finds the machine code already compiled.
            # numba checks each entry against a hash of the source file's contents.
            rel = Path(py_file).resolve().parent.relative_to(_PACKAGE.parent)
            self._cache_path = str(cache_dir() / "numba" / "_".join(rel.parts))

        def get_cache_path(self) -> str:
            return self._cache_path

        def get_source_stamp(self) -> Any:
            # the file's own hash (numba's) and that of the sources it may inline
            return (super().get_source_stamp(), kernel_sources_stamp())

        @classmethod
        def from_function(cls, py_func: Any, py_file: str) -> Any:
            if getattr(config, "CACHE_DIR", None):
                return None  # the user's NUMBA_CACHE_DIR wins
            try:
                Path(py_file).resolve().relative_to(_PACKAGE)
            except (OSError, ValueError):
                return None
            return super().from_function(py_func, py_file)

    classes.insert(0, CainferCacheLocator)
    return True


NUMBA_LOCATOR = _install_numba_locator()


def _user_sets_pytensor_compiledir() -> bool:
    """Whether the user's PyTensor flags or config files choose its compile directory."""
    if "compiledir" in os.environ.get("PYTENSOR_FLAGS", ""):
        return True
    rc = os.environ.get("PYTENSORRC", str(Path.home() / ".pytensorrc"))
    for name in rc.split(os.pathsep):
        try:
            if "compiledir" in Path(name).expanduser().read_text(errors="replace"):
                return True
        except OSError:
            continue
    return False


def prepare_pytensor() -> None:
    """Give PyTensor a writable compile directory when its default cannot be written.

    PyTensor compiles into ``~/.pytensor`` and fails on import where that
    cannot be created (a read-only home directory, a container run as another
    user). Before PyTensor is first imported, and only when neither
    ``PYTENSOR_FLAGS`` nor a ``.pytensorrc`` chooses the directory, it is
    pointed at ``cache_dir()/pytensor`` instead (through ``PYTENSOR_FLAGS``,
    so that worker processes inherit it).
    """
    if "pytensor" in sys.modules or _user_sets_pytensor_compiledir():
        return
    if _writable(Path.home() / ".pytensor"):  # PyTensor's default: $HOME/.pytensor
        return
    flags = os.environ.get("PYTENSOR_FLAGS", "")
    own = f"base_compiledir={cache_dir() / 'pytensor'}"
    os.environ["PYTENSOR_FLAGS"] = f"{flags},{own}" if flags else own
