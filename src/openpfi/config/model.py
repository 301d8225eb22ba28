"""The model and its LoRA adapters: [model] and [lora]."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from openpfi.config.section import Section


class ModelConfig(Section):
    name: str = "smollm2-135m-instruct"
    """Bundled id ("smollm2-135m-instruct", "tiny-random"; optional "gemma3-270m",
    "qwen2.5-coder-0.5b-instruct"), a local HF model folder or a .gguf file."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Where the model runs; the same config runs on a GPU with "cuda"."""
    adapter: str = ""
    """Optional starting adapter (e.g. safety-tuned): a peft folder (adapter_config.json +
    adapter_model.safetensors, such as a run's checkpoints/round-N or an `openpfi export`) or a
    .safetensors file of LoRA weights; one for another base model, rank or alpha is refused."""
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"
    """Compute dtype of the frozen base: auto = bfloat16 where the CPU/GPU supports it."""


class LoraConfig(Section):
    r: int = Field(8, ge=1, le=1024)
    """LoRA rank: h = W0 x + (alpha / r) B A x with A (r x in), B (out x r)."""
    alpha: float = Field(16.0, gt=0)
    """LoRA scale numerator (the update is scaled by alpha / r)."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the LoRA input during training."""
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)
    """Names of the linear modules that get LoRA adapters (e.g. "q_proj", "v_proj", "o_proj", "up_proj")."""
    aggregation: Literal["naive", "product", "stack", "zeropad"] = "naive"
    """How the server combines LoRA factors (strategies/lora_aggregation.py): naive = mean of A and of B
    (not the mean update; the baseline); product = exact mean of B·A re-factored to rank r by SVD;
    stack = FLoRA stacking, exact, merged into the global weights; zeropad = HetLoRA zero-padding."""
    client_ranks: list[int] = Field(default_factory=list)
    """Per-client LoRA ranks (each <= r), cycled over the clients (see client_ranks_by); empty = all use r.
    A client of rank r_i trains the first r_i components of the rank-r adapter (scale alpha/r)."""
    client_ranks_by: Literal["order", "examples"] = "order"
    """order: client k (sorted ids) gets client_ranks[k % len]; examples: the smallest ranks go to the
    clients with the fewest training examples (a compute budget growing with the data)."""
    keep_merged: bool = False
    """aggregation = "product": keep the SVD truncation residual as a dense merged delta (exact, more bytes)."""
