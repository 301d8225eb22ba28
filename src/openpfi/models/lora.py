"""LoRA through peft's functional API: the seam a federated system needs.

    h = W0 x + (alpha / r) * B A x        W0 frozen (bf16), A (r, in), B (out, r) trainable float32

Adapters travel and rest as state dicts keyed the way
``peft.get_peft_model_state_dict`` names them, e.g.
``model.layers.0.self_attn.q_proj.lora_A.weight``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file

from openpfi.errors import UserError

ADAPTER = "default"


def attach_lora(model: Any, r: int, alpha: float, targets: list[str], dropout: float, seed: int) -> None:
    """Inject LoRA layers once into the shared base model (seeded init of A; B = 0)."""
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise UserError(
            f"lora.targets {missing} match no module of the model; valid names include "
            f"{sorted(n for n in names if n.endswith('_proj'))[:8]}"
        )
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=dropout, bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(cfg, model, adapter_name=ADAPTER)
    for name, p in model.named_parameters():
        is_lora = "lora_" in name
        p.requires_grad_(is_lora)
        if is_lora and p.dtype != torch.float32:
            p.data = p.data.float()  # LoRA weights and optimizer state in float32


def lora_parameters(model: Any) -> dict[str, torch.nn.Parameter]:
    """Trainable LoRA parameters keyed like the adapter state dict."""
    marker = f".{ADAPTER}."
    return {n.replace(marker, "."): p for n, p in model.named_parameters() if "lora_" in n}


def adapter_state(model: Any) -> dict[str, torch.Tensor]:
    """A detached float32 CPU copy of the adapter weights (the model may sit on a GPU)."""
    state = get_peft_model_state_dict(model, adapter_name=ADAPTER)
    return {k: v.detach().float().cpu().clone() for k, v in state.items()}


def load_adapter_state(model: Any, state: dict[str, torch.Tensor]) -> None:
    """Write adapter weights into the model; refuse keys or shapes that do not fit."""
    params = lora_parameters(model)
    unknown = sorted(set(state) - set(params))
    if unknown:
        raise UserError(f"adapter has {len(unknown)} tensors this model does not have, e.g. {unknown[0]}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(params[k].shape):
            raise UserError(f"adapter tensor {k} has shape {tuple(v.shape)}, the model expects {tuple(params[k].shape)}")
    set_peft_model_state_dict(model, state, adapter_name=ADAPTER)


def copy_into(model: Any, state: dict[str, torch.Tensor]) -> None:
    """Hot-path variant of load_adapter_state: in-place copy, keys already validated."""
    params = lora_parameters(model)
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


def read_adapter_file(path: str) -> dict[str, torch.Tensor]:
    """Read a starting adapter: a .safetensors file or a folder holding adapter_model.safetensors."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "adapter_model.safetensors"
    if not p.is_file():
        raise UserError(f"model.adapter: {p} not found; pass a .safetensors adapter file or its folder")
    try:
        state = load_file(str(p))
    except Exception as err:  # safetensors raises several error types for corrupt files
        raise UserError(f"model.adapter: {p} is not a readable safetensors file ({err})") from None
    # Accept peft's saved naming too ("base_model.model." prefix).
    return {k.removeprefix("base_model.model."): v.float() for k, v in state.items()}
