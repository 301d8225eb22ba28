"""Dense merged deltas on top of the frozen base: ``h = W0 x + D x + (alpha / r) B A x``.

Two LoRA aggregations keep part of the global update outside the low-rank
factors (``strategies/lora_aggregation.py``):

- stacking (FLoRA): every round the stacked product ``sum_i p_i dW_i`` is merged
  into the global weights and the LoRA factors start again from their init;
- product averaging with ``lora.keep_merged``: the SVD truncation residual
  ``mean_i dW_i - (alpha/r) B' A'`` is kept instead of dropped.

The base weights are bf16 and shared by all clients, so ``D`` is not folded
into them; a forward hook on each adapted module adds ``x @ D^T`` (D kept
float32 in state dicts, cast once per ``set`` to the compute dtype). In state
dicts ``D`` travels under the key ``<module>.merged_delta`` (shape (out, in)).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from openpfi.runfolder.adapter import MERGED_SUFFIX


def is_merged_key(key: str) -> bool:
    return key.endswith(MERGED_SUFFIX)


def merged_key(prefix: str) -> str:
    return prefix + MERGED_SUFFIX


def split_merged(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(LoRA part, merged part keyed by module prefix)."""
    lora = {k: v for k, v in state.items() if not is_merged_key(k)}
    merged = {k.removesuffix(MERGED_SUFFIX): v for k, v in state.items() if is_merged_key(k)}
    return lora, merged


class MergedDeltas:
    """Forward hooks that add a dense delta to named modules of one model."""

    def __init__(self, model: Any):
        self.model = model
        self.modules: dict[str, Any] = dict(model.named_modules())
        self.active: dict[str, torch.Tensor] = {}
        self._hooked: set[str] = set()

    def set(self, merged: Mapping[str, torch.Tensor]) -> None:
        """Replace the active deltas (an empty mapping removes them all)."""
        unknown = sorted(set(merged) - set(self.modules))
        if unknown:
            raise KeyError(f"merged delta for unknown module {unknown[0]}")
        active: dict[str, torch.Tensor] = {}
        for prefix, d in merged.items():
            module = self.modules[prefix]
            weight = getattr(module, "base_layer", module).weight
            active[prefix] = d.detach().to(device=weight.device, dtype=weight.dtype)  # (out, in)
            if prefix not in self._hooked:
                self.modules[prefix].register_forward_hook(self._hook(prefix))
                self._hooked.add(prefix)
        self.active = active

    def _hook(self, prefix: str) -> Any:
        def hook(module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            d = self.active.get(prefix)
            if d is None:
                return output
            x = args[0]
            return output + F.linear(x.to(d.dtype), d).to(output.dtype)

        return hook
