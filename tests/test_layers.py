"""Import boundaries: the layer order, written once (LAYERS); only engines/flower imports flwr;
algorithms/ stays pure; no module imports another module's private name."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "openpfi"
FLOWER_DIR = SRC / "engines" / "flower"
ALGORITHMS_DIR = SRC / "algorithms"
ALLOWED_FROM_ALGORITHMS = ("openpfi.errors", "openpfi.algorithms")
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("ui",),
    ("bench",),
    ("recipes",),
    ("engines",),
    ("assembly",),
    ("strategies",),
    ("client",),
    ("monitor",),
    ("algorithms", "models", "data"),
    ("config", "runfolder", "assets"),
    ("errors", "__init__"),
)
"""Top to bottom: a module may import its own package and the layers below its own, never one above
or beside it (docs/ARCHITECTURE.md)."""
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


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


def _package(name: str) -> str | None:
    """The top-level openpfi package (layer member) of an absolute module name, or None."""
    parts = name.split(".")
    if parts[0] != "openpfi":
        return None
    return parts[1] if len(parts) > 1 and not parts[1].startswith("__") else "__init__"


def _private_name(name: str) -> bool:
    """``openpfi.a.b._x`` names a private attribute or module of another module."""
    return any(p.startswith("_") and not p.startswith("__") for p in name.split(".")[1:])


def layer_violations(path: Path) -> list[str]:
    """Imports of ``path`` that point up or sideways in LAYERS, or at a private name of another module."""
    here = _package(_module_name(path))
    module = _module_name(path)
    out = []
    for name in _imports(path):
        there = _package(name)
        if there is None or here is None:
            continue
        if there != here and (there not in RANK or RANK[there] <= RANK[here]):
            out.append(f"{path.relative_to(SRC)} imports {name} ({there} is not below {here})")
        owner = name.rpartition(".")[0]
        if _private_name(name) and not module.startswith(owner):
            out.append(f"{path.relative_to(SRC)} imports the private name {name}")
    return out


def test_every_package_has_a_layer() -> None:
    packages = {p.name.removesuffix(".py") for p in SRC.iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert packages - set(RANK) == set(), "add new top-level packages to LAYERS"


def test_layer_checker_flags_upward_sideways_and_private_imports(tmp_path: Path) -> None:
    # Prepare: what an engine module may and may not import
    source = (
        "from openpfi.assembly.clients import prepare\nfrom openpfi.recipes.federated_sft import start\n"
        "import openpfi.bench.round\nfrom openpfi.monitor.detectors import _check\nfrom openpfi.engines.rounds import _x\n"
    )
    names = imported_modules(source, "openpfi.engines.inprocess")
    # Execute
    up = [n for n in names if RANK[_package(n)] < RANK["engines"]]
    private = [n for n in names if _private_name(n)]
    # Assert
    assert up == ["openpfi.recipes.federated_sft.start", "openpfi.bench.round"]
    assert private == ["openpfi.monitor.detectors._check", "openpfi.engines.rounds._x"]


def test_imports_point_down_the_layers_only() -> None:
    """Also imports inside functions (ast.walk sees every import statement)."""
    # Execute
    found = sorted(v for p in SRC.rglob("*.py") for v in layer_violations(p))
    # Assert
    assert found == [], "\n".join(found)


def test_the_pure_layers_type_check() -> None:
    """mypy over algorithms/ and monitor/ (pyproject.toml [tool.mypy]) finds nothing."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary"], cwd=root, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
