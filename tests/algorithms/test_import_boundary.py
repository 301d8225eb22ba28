"""Import boundaries: only engines/flower imports flwr; algorithms/ stays pure."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "openpfi"
FLOWER_DIR = SRC / "engines" / "flower"
ALGORITHMS_DIR = SRC / "algorithms"
ALLOWED_FROM_ALGORITHMS = ("openpfi.errors", "openpfi.algorithms")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> list[str]:
    """Absolute names imported by ``source``, relative imports resolved.

    ``from m import x`` gives ``m.x`` (x is a submodule or an attribute of m;
    either way the prefix says where it comes from).
    """
    package = module if is_package else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                prefix = ".".join(base)
                target = f"{prefix}.{node.module}" if node.module else prefix
            else:
                target = node.module or ""
            names.extend(f"{target}.{alias.name}" for alias in node.names)
    return names


def _is_flwr(name: str) -> bool:
    return name == "flwr" or name.startswith("flwr.")


def _is_allowed_in_algorithms(name: str) -> bool:
    if name != "openpfi" and not name.startswith("openpfi."):
        return True
    return any(name == ok or name.startswith(ok + ".") for ok in ALLOWED_FROM_ALGORITHMS)


def _imports(path: Path) -> list[str]:
    return imported_modules(path.read_text(encoding="utf-8"), _module_name(path), path.name == "__init__.py")


def test_checker_detects_violations() -> None:
    # Prepare
    source = (
        "import flwr.common\nfrom .. import models\nfrom ..errors import UserError\n"
        "from .state import add\nfrom openpfi import errors\nfrom openpfi.client.train import fit\n"
    )
    # Execute
    names = imported_modules(source, "openpfi.algorithms.lora")
    # Assert
    assert names == [
        "flwr.common",
        "openpfi.models",
        "openpfi.errors.UserError",
        "openpfi.algorithms.state.add",
        "openpfi.errors",
        "openpfi.client.train.fit",
    ]
    assert [n for n in names if _is_flwr(n)] == ["flwr.common"]
    assert [n for n in names if not _is_allowed_in_algorithms(n)] == [
        "openpfi.models",
        "openpfi.client.train.fit",
    ]


def test_only_engines_flower_imports_flwr() -> None:
    # Prepare
    files = [p for p in SRC.rglob("*.py") if FLOWER_DIR not in p.parents]
    assert len(files) > 5, f"no sources found under {SRC}"
    # Execute
    offenders = {str(p.relative_to(SRC)): n for p in files for n in _imports(p) if _is_flwr(n)}
    # Assert
    assert offenders == {}, f"flwr imported outside engines/flower: {offenders}"


def test_algorithms_import_only_errors_and_algorithms() -> None:
    # Prepare
    files = sorted(ALGORITHMS_DIR.rglob("*.py"))
    assert len(files) >= 8
    # Execute
    offenders = {str(p.relative_to(SRC)): n for p in files for n in _imports(p) if not _is_allowed_in_algorithms(n)}
    # Assert
    assert offenders == {}, f"algorithms/ imports other openpfi modules: {offenders}"


def test_the_pure_layers_type_check() -> None:
    """mypy over algorithms/ and monitor/ (pyproject.toml [tool.mypy]) finds nothing."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=root, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
