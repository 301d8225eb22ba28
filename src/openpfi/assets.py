"""Find files shipped inside installed PyPI packages, without importing them.

The asset packages are data carriers (see ASSETS.md): they are never imported;
their files are located through ``importlib.metadata``. Every missing package or
file is one line naming who needs it (``what``) and the pip command that fixes it.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from openpfi.errors import UserError


def _distribution(dist: str, what: str, install: str = "") -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"{what} needs the package '{dist}', which is not installed; "
                        f"install it with `pip install --no-deps {install or dist}`") from None


def package_file(dist: str, relative_path: str, what: str = "openpfi", install: str = "") -> Path:
    """Absolute path of ``relative_path`` inside the installed distribution ``dist``; ``install``:
    the packages the fix command names (default ``dist``), e.g. every chunk of a model."""
    path = Path(str(_distribution(dist, what, install).locate_file(relative_path))).resolve()
    if not path.is_file():
        raise UserError(f"{what}: file {relative_path} is missing from package '{dist}'; reinstall it with "
                        f"`pip install --no-deps --force-reinstall {dist}`")
    return path


def package_files(dist: str, prefix: str, suffix: str, what: str = "openpfi") -> list[Path]:
    """Sorted absolute paths of the files of ``dist`` under ``prefix`` ending in ``suffix``."""
    files = _distribution(dist, what).files or []
    rels = sorted(str(f) for f in files if str(f).startswith(prefix) and str(f).endswith(suffix))
    paths = [package_file(dist, rel, what) for rel in rels]
    if not paths:
        raise UserError(f"{what}: package '{dist}' has no files {prefix}*{suffix}; reinstall it with "
                        f"`pip install --no-deps --force-reinstall {dist}`")
    return paths
