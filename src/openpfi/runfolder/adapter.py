"""Adapter folders in peft's format: how every adapter openpfi writes rests on disk.

A folder (a server checkpoint ``checkpoints/round-N/``, the run's ``start/``, a client's
``personal-round-N/``, an exported ``--format peft`` folder) holds::

    adapter_config.json        peft's LoraConfig (task_type CAUSAL_LM, base_model_name_or_path)
    adapter_model.safetensors  tensors named as peft saves them:
                               base_model.model.<module>.lora_A.weight (r, in), .lora_B.weight (out, r)
    merged_deltas.safetensors  only with dense merged deltas: the exact deltas D (out, in) per module
    openpfi-adapter.json       base model name + weights sha256, which tensors are this folder's own
                               state ("keys"), the LoRA layout, and what the folder is (round, client)

so ``PeftModel.from_pretrained(base, folder)`` gives the model openpfi computes with.

Dense merged deltas (``models/merged.py``: ``h = W0 x + D x + s B A x``, ``s = alpha / r``) ride
in the LoRA factors as ``k = min(in, out)`` extra components, so that plain peft adds them too::

    in <= out:  A' = [A; I_in],    B' = [B, D / s]        s B' A' = s B A + D
    in >  out:  A' = [A; D / s],   B' = [B, I_out]

with the module's rank ``r + k`` and alpha ``alpha (r + k) / r`` (same scale s) in peft's
``rank_pattern`` / ``alpha_pattern``. The first r rows of A' and columns of B' are openpfi's A
and B bit for bit, and ``merged_deltas.safetensors`` keeps D exactly, so reading a folder back
(:func:`read_adapter_folder`) returns the state that was written, bit for bit (resume).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

PEFT_PREFIX = "base_model.model."
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
MERGED_FILE = "merged_deltas.safetensors"
INFO_FILE = "openpfi-adapter.json"
MERGED_SUFFIX = ".merged_delta"
A_SUFFIX = ".lora_A.weight"
B_SUFFIX = ".lora_B.weight"


@dataclass(frozen=True)
class AdapterLayout:
    """What a folder's adapter_config.json says: LoRA shape and the base model it belongs to."""

    r: int
    alpha: float
    targets: tuple[str, ...]
    dropout: float = 0.0
    base_model: str = ""
    """peft's ``base_model_name_or_path``: the base model's Hugging Face folder where one exists."""
    base_name: str = ""
    """openpfi's ``model.name`` of the base (e.g. "smollm2-135m-instruct", "tiny-random")."""
    base_sha256: str = ""
    """The base weights' sha256 as manifest.json records it."""

    @property
    def scale(self) -> float:
        return self.alpha / self.r

    def at_rank(self, rank: int) -> AdapterLayout:
        """The same scale alpha/r at rank ``rank`` (a lower-rank client's adapter)."""
        return AdapterLayout(rank, self.alpha * rank / self.r, self.targets, self.dropout, self.base_model,
                             self.base_name, self.base_sha256)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AdapterLayout:
        return cls(int(d["r"]), float(d["alpha"]), tuple(d["targets"]), float(d.get("dropout", 0.0)),
                   str(d.get("base_model", "")), str(d.get("base_name", "")), str(d.get("base_sha256", "")))


@dataclass
class AdapterFolder:
    """A folder read back: the exact state (openpfi's key names), peft's config, openpfi's info."""

    state: dict[str, torch.Tensor]
    config: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def own(self) -> dict[str, torch.Tensor]:
        """The tensors that are this folder's own state (all when the folder does not say)."""
        keys = self.info.get("keys")
        return dict(self.state) if keys is None else {k: self.state[k] for k in keys}

    @property
    def layout(self) -> AdapterLayout | None:
        d = self.info.get("layout")
        return AdapterLayout.from_dict(d) if d else None


def peft_config(layout: AdapterLayout, rank_pattern: Mapping[str, int] | None = None,
                alpha_pattern: Mapping[str, float] | None = None) -> dict[str, Any]:
    """adapter_config.json as peft writes it (``LoraConfig.save_pretrained``), sets as sorted lists."""
    import peft
    from peft import LoraConfig

    cfg = LoraConfig(
        r=layout.r, lora_alpha=layout.alpha,  # type: ignore[arg-type]  # peft takes float alphas too
        target_modules=sorted(layout.targets), lora_dropout=layout.dropout,
        bias="none", task_type="CAUSAL_LM", base_model_name_or_path=layout.base_model or None,
        rank_pattern=dict(rank_pattern or {}), alpha_pattern=dict(alpha_pattern or {}), inference_mode=True,
    )
    out = cfg.to_dict()
    for k, v in out.items():
        if isinstance(v, set):
            out[k] = sorted(v)
    out["peft_version"] = peft.__version__
    return out


def encode(state: Mapping[str, torch.Tensor], layout: AdapterLayout) -> tuple[dict[str, Any], dict[str, torch.Tensor],
                                                                               dict[str, torch.Tensor]]:
    """(adapter_config, tensors under peft's names, exact merged deltas by module) for ``state``."""
    lora = {k: v for k, v in state.items() if not k.endswith(MERGED_SUFFIX)}
    merged = {k.removesuffix(MERGED_SUFFIX): v for k, v in state.items() if k.endswith(MERGED_SUFFIX)}
    tensors = {PEFT_PREFIX + k: v for k, v in lora.items()}
    ranks: dict[str, int] = {}
    alphas: dict[str, float] = {}
    for module, d in sorted(merged.items()):
        a_key, b_key = module + A_SUFFIX, module + B_SUFFIX
        if a_key not in lora or b_key not in lora:
            raise ValueError(f"merged delta of {module} without both of its LoRA factors")
        a, b = lora[a_key], lora[b_key]  # (r, in), (out, r)
        rows, cols = d.shape  # (out, in)
        scaled = (d.double() / layout.scale).to(a.dtype)
        if cols <= rows:
            a_d, b_d = torch.eye(cols, dtype=a.dtype), scaled  # (in, in), (out, in)
        else:
            a_d, b_d = scaled, torch.eye(rows, dtype=b.dtype)  # (out, in), (out, out)
        tensors[PEFT_PREFIX + a_key] = torch.cat([a, a_d], dim=0)
        tensors[PEFT_PREFIX + b_key] = torch.cat([b, b_d], dim=1)
        rank = int(a.shape[0]) + min(rows, cols)
        ranks[re.escape(module)] = rank
        alphas[re.escape(module)] = layout.alpha * rank / layout.r
    return peft_config(layout, ranks, alphas), tensors, merged


def _save(tensors: Mapping[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in sorted(tensors.items())}, str(path), metadata={"format": "pt"})


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_adapter_files(folder: Path, state: Mapping[str, torch.Tensor], layout: AdapterLayout,
                        own: Iterable[str] | None = None, info: Mapping[str, Any] | None = None) -> None:
    """Write the adapter files of ``state`` into the existing ``folder`` (not atomic on its own).

    ``own``: the keys that are this folder's state (read back by :attr:`AdapterFolder.own`);
    the others complete the model (e.g. a server checkpoint's frozen factors)."""
    config, tensors, merged = encode(state, layout)
    _write_json(folder / CONFIG_FILE, config)
    _save(tensors, folder / WEIGHTS_FILE)
    if merged:
        _save(merged, folder / MERGED_FILE)
    meta = {
        "format": 1,
        "base_model": layout.base_name,
        "base_sha256": layout.base_sha256,
        "layout": {**asdict(layout), "targets": sorted(layout.targets)},
        "keys": sorted(state) if own is None else sorted(own),
        **(info or {}),
    }
    _write_json(folder / INFO_FILE, meta)


def write_adapter_folder(folder: Path, state: Mapping[str, torch.Tensor], layout: AdapterLayout,
                         own: Iterable[str] | None = None, info: Mapping[str, Any] | None = None) -> Path:
    """Write a whole adapter folder atomically (see :func:`new_folder`)."""
    with new_folder(folder) as tmp:
        write_adapter_files(tmp, state, layout, own, info)
    return Path(folder)


@contextmanager
def new_folder(folder: Path) -> Iterator[Path]:
    """A temporary sibling of ``folder`` to fill; renamed into place (replacing ``folder``) when the
    block ends normally, removed when it raises, so a folder is either whole or absent."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def is_adapter_folder(folder: Path) -> bool:
    return (Path(folder) / CONFIG_FILE).is_file() and (Path(folder) / WEIGHTS_FILE).is_file()


def read_adapter_folder(folder: Path) -> AdapterFolder:
    """Read a folder :func:`write_adapter_files` wrote (or any peft LoRA folder) back into openpfi's
    key names; merged deltas come back exactly and the factors to their rank r."""
    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    info = json.loads((folder / INFO_FILE).read_text()) if (folder / INFO_FILE).is_file() else {}
    raw = load_file(str(folder / WEIGHTS_FILE))
    merged = load_file(str(folder / MERGED_FILE)) if (folder / MERGED_FILE).is_file() else {}
    r = int(config.get("r", 0))
    state: dict[str, torch.Tensor] = {}
    for name, t in raw.items():
        key = name.removeprefix(PEFT_PREFIX)
        if key.endswith(A_SUFFIX) and key.removesuffix(A_SUFFIX) in merged:
            t = t[:r].clone()  # (r, in): the extra rows carry the merged delta
        elif key.endswith(B_SUFFIX) and key.removesuffix(B_SUFFIX) in merged:
            t = t[:, :r].clone()  # (out, r)
        state[key] = t
    for module, d in merged.items():
        state[module + MERGED_SUFFIX] = d
    return AdapterFolder(state, config, info)
