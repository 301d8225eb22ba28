"""Load open-weight models: bundled GGUF (cached as safetensors), HF folders, .gguf files, tiny-random.

Compute policy (DESIGN.md "Models and compute"): the frozen base weights are
cast ONCE to bfloat16 where the hardware supports it; LoRA weights and
optimizer state stay float32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from openpfi.errors import UserError
from openpfi.models.base_folder import tiny_random_folder
from openpfi.models.registry import BUNDLED, DEFAULT_MODEL, ModelSource, cache_dir, resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    """What manifest.json records about the model."""

    name: str
    kind: str
    path: str
    sha256: str
    licence: str
    num_parameters: int
    dtype: str
    folder: str = ""
    """A Hugging Face folder with these base weights (models/base_folder.py); "" for a .gguf file."""


@dataclass
class LoadedModel:
    model: Any  # transformers PreTrainedModel, frozen
    tokenizer: Any
    info: ModelInfo
    compute_dtype: torch.dtype


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_state(state: dict[str, torch.Tensor]) -> str:
    """Hash of a state dict: names, dtypes, shapes and bytes, in sorted key order."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().contiguous().cpu()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def bf16_supported(device: str) -> bool:
    """bfloat16 matmuls are fast on CUDA and on CPUs with AVX512-BF16 or AMX."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def pick_dtype(policy: str, device: str, hidden_size: int = 4096) -> torch.dtype:
    """auto: bfloat16 where the hardware has fast bf16 matmuls and the matrices are big enough.

    Below a hidden size of 256 (e.g. tiny-random) bf16 kernels are slower than
    float32 on CPUs (measured: the LM head of tiny-random runs ~8x slower), so
    auto keeps float32 there.
    """
    if policy == "float32":
        return torch.float32
    if policy == "bfloat16":
        return torch.bfloat16
    if bf16_supported(device) and hidden_size >= 256:
        return torch.bfloat16
    return torch.float32


def _quiet_transformers() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    # peft asks transformers about gradient checkpointing through a name deprecated for v6
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _bundled_cache(name: str) -> tuple[Path, str]:
    """Dequantize the bundled GGUF once into a safetensors folder; return (folder, gguf sha256)."""
    gguf = resolve(name).path
    assert gguf is not None
    return dequantized_folder(gguf, f"{name}-{gguf.stat().st_size}", BUNDLED[name].licence)


def dequantized_folder(gguf: Path, marker: str, licence: str) -> tuple[Path, str]:
    """A GGUF file dequantized once into ``<cache>/models/<marker>/`` (float32 safetensors, tokenizer
    and chat template, ``openpfi-source.json``); return (folder, gguf sha256)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = gguf.stat()
    root = cache_dir() / "models"
    folder = root / marker
    info_file = folder / "openpfi-source.json"
    if info_file.is_file():
        info = json.loads(info_file.read_text())
        if info.get("mtime") == stat.st_mtime:
            return folder, str(info["sha256"])
    log.info("dequantizing %s once into %s", gguf.name, folder)
    sha = sha256_file(gguf)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    q = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained: rebuild from its config and copy the weights.
    fresh = AutoModelForCausalLM.from_config(q.config, dtype=torch.float32)
    fresh.load_state_dict(q.state_dict())
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{marker}-", dir=root))
    fresh.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "openpfi-source.json").write_text(
        json.dumps({"gguf": str(gguf), "sha256": sha, "mtime": stat.st_mtime, "licence": licence})
    )
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder, sha


def hf_folder(info: ModelInfo) -> Path:
    """A Hugging Face folder of the base weights (a user's .gguf file is dequantized into the cache once)."""
    if info.folder:
        return Path(info.folder)
    gguf = Path(info.path)
    return dequantized_folder(gguf, f"gguf-{gguf.stem}-{gguf.stat().st_size}", info.licence)[0]


def load_tokenizer(name: str = DEFAULT_MODEL) -> Any:
    """The tokenizer of a model (tiny-random uses the SmolLM2 tokenizer)."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    src = resolve(name)
    if src.kind in ("bundled", "tiny-random"):
        folder, _ = _bundled_cache(DEFAULT_MODEL if src.kind == "tiny-random" else src.name)
        tok = AutoTokenizer.from_pretrained(str(folder))
    elif src.kind == "gguf":
        assert src.path is not None
        with _unreadable(src.path, "tokenizer"):
            tok = AutoTokenizer.from_pretrained(str(src.path.parent), gguf_file=src.path.name)
    else:
        assert src.path is not None
        with _unreadable(src.path, "tokenizer"):
            tok = AutoTokenizer.from_pretrained(str(src.path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        tok.chat_template = fallback_chat_template(tok)
    return tok


GEMMA_TURNS = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
"""Gemma's turn format, for Gemma base models (their tokenizers know the turn tokens)."""
PLAIN_TURNS = (
    "{{ bos_token or '' }}{% for m in messages %}{{ 'Assistant' if m['role'] == 'assistant' else 'User' }}: "
    "{{ m['content'] }}{{ eos_token if m['role'] == 'assistant' else '' }}\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
"""Plain "User: / Assistant:" turns for any other base model without a chat template."""


def _end_ids(current: int | list[int] | None, end_of_turn: int) -> list[int]:
    """Generation stops at the model's eos and at the end of a turn (Gemma turns end there)."""
    ids = [] if current is None else [current] if isinstance(current, int) else list(current)
    return ids if end_of_turn in ids else [*ids, end_of_turn]


def fallback_chat_template(tokenizer: Any) -> str:
    """A chat template for a base model that ships none (logged: its outputs are not an instruct model's)."""
    gemma = "<start_of_turn>" in tokenizer.get_vocab()
    log.info("the tokenizer has no chat template (a base model); using %s turns", "Gemma" if gemma else "plain")
    return GEMMA_TURNS if gemma else PLAIN_TURNS


@contextmanager
def _unreadable(path: Path, what: str) -> Iterator[None]:
    """Turn transformers' errors on a user's model file into one line naming the file."""
    try:
        yield
    except (OSError, ValueError, KeyError, TypeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0].rstrip(" .:")
        raise UserError(f"cannot load the {what} of {path}: {first}; pass a GGUF or Hugging Face model folder "
                        f"of an architecture transformers supports") from None


def _tiny_random(tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return LlamaForCausalLM(cfg)


def _load_from(src: ModelSource) -> tuple[Any, str, str]:
    """(model, weights sha256, Hugging Face folder of the weights or "")."""
    from transformers import AutoModelForCausalLM

    if src.kind == "bundled":
        folder, sha = _bundled_cache(src.name)
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32), sha, str(folder)
    assert src.path is not None
    if src.kind == "gguf":
        sha = sha256_file(src.path)
        with _unreadable(src.path, "weights"):
            model = AutoModelForCausalLM.from_pretrained(str(src.path.parent), gguf_file=src.path.name,
                                                         dtype=torch.float32)
        return model, sha, ""
    files = sorted(src.path.glob("*.safetensors")) or sorted(src.path.glob("*.bin"))
    if not files:
        raise UserError(f"model folder {src.path} holds no *.safetensors weights; save the model with safetensors")
    h = hashlib.sha256()
    for f in files:
        h.update(sha256_file(f).encode())
    with _unreadable(src.path, "weights"):
        model = AutoModelForCausalLM.from_pretrained(str(src.path), dtype=torch.float32, use_safetensors=True)
    return model, h.hexdigest(), str(src.path)


def load_model(name: str = DEFAULT_MODEL, device: str = "cpu", dtype: str = "auto") -> LoadedModel:
    """Load a frozen base model and its tokenizer under openpfi's dtype policy."""
    _quiet_transformers()
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError('model.device = "cuda" but no CUDA device is available; set model.device = "cpu"')
    src = resolve(name)
    tokenizer = load_tokenizer(name)
    if src.kind == "tiny-random":
        model = _tiny_random(tokenizer)
        sha = sha256_state(model.state_dict())
        folder = str(tiny_random_folder(model, tokenizer, sha))
    else:
        model, sha, folder = _load_from(src)
    compute = pick_dtype(dtype, device, int(getattr(model.config, "hidden_size", 4096)))
    model.to(device=device, dtype=compute)  # frozen base cast once, not at every step
    model.eval()
    model.requires_grad_(False)
    if model.generation_config is not None and tokenizer.pad_token_id is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None and tokenizer.chat_template == GEMMA_TURNS:
        model.generation_config.eos_token_id = _end_ids(model.generation_config.eos_token_id,
                                                        tokenizer.convert_tokens_to_ids("<end_of_turn>"))
    info = ModelInfo(
        name=src.name,
        kind=src.kind,
        path=str(src.path or ""),
        sha256=sha,
        licence=src.licence,
        num_parameters=sum(p.numel() for p in model.parameters()),
        dtype=str(compute).removeprefix("torch."),
        folder=folder,
    )
    return LoadedModel(model=model, tokenizer=tokenizer, info=info, compute_dtype=compute)


def info_dict(info: ModelInfo) -> dict[str, Any]:
    return asdict(info)
