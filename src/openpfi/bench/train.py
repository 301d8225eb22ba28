"""`openpfi bench train`: tokens/s of one client's LoRA step, against ceilings and a plain HF loop.

All figures come from ONE process and the same batches (4 x 256 tokens of
packed chitchat turns, loss on response tokens), so ratios are meaningful even
on a noisy shared machine:

- openpfi: the production path (``client.train.train_local``): bf16 frozen
  base cast once, bf16 autocast, LoRA + AdamW state in float32, LM head on
  target tokens only;
- hf_fp32: a plain Hugging Face + peft float32 loop (``get_peft_model``,
  ``model(**batch, labels=...)``, AdamW);
- trl_bf16: TRL's ``SFTTrainer`` with ``bf16=True`` and its other defaults, as FlowerTune
  and OpenFedLLM clients run (``bench/train_trl.py``; needs the dev extra's ``trl``);
- matmul ceilings: 2048^3 products in float32 and bfloat16.

``device = "cuda"`` runs every loop and the ceilings on the GPU (``benchmarks/gpu_check.sh``).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from openpfi.bench.common import matmul_gflops, packed_batches, write_json
from openpfi.bench.train_trl import TRL_SETTINGS, trl_available, trl_bf16_loop
from openpfi.client.train import TrainSettings, train_local
from openpfi.config import ClientConfig
from openpfi.data.tokenize import collate
from openpfi.errors import UserError
from openpfi.models.loader import load_model
from openpfi.models.lora import attach_lora, lora_parameters

BATCH, SEQ, WARMUP = 4, 256, 2


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _openpfi_loop(model_name: str, batches: list[list[Any]], steps: int, device: str) -> float:
    lm = load_model(model_name, device=device)
    attach_lora(lm.model, 8, 16, ["q_proj", "v_proj"], 0.0, 0)
    params = lora_parameters(lm.model)
    flat = [e for b in batches for e in b]
    stamps: list[float] = []
    settings = TrainSettings.from_config(ClientConfig(), steps=WARMUP + steps, batch_size=BATCH, grad_accum=1, lr=1e-4)
    train_local(lm.model, params, flat, settings, int(lm.tokenizer.pad_token_id), 0,
                on_step=lambda *_: (_sync(device), stamps.append(time.perf_counter())))
    per_step = (stamps[-1] - stamps[WARMUP - 1]) / steps
    del lm
    gc.collect()
    return BATCH * SEQ / per_step


def _hf_fp32_loop(model_name: str, batches: list[list[Any]], steps: int, pad_id: int, device: str) -> float:
    from peft import LoraConfig, get_peft_model

    lm = load_model(model_name, device=device, dtype="float32")
    lm.model.requires_grad_(False)
    model = get_peft_model(lm.model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for i in range(WARMUP + steps):
        batch = {k: v.to(device) for k, v in collate(batches[i % len(batches)], pad_id).items()}
        _sync(device)
        t = time.perf_counter()
        out = model(**batch)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - t)
    del model, lm
    gc.collect()
    return BATCH * SEQ / (sum(times[WARMUP:]) / steps)


def run_train_bench(out: Path, *, model: str, steps: int, console: Console, device: str = "cpu",
                    trl: bool = True) -> dict[str, Any]:
    console.print(f"bench train: {model} on {device}, batch {BATCH} x {SEQ} tokens, {steps} timed steps per loop "
                  f"(+{WARMUP} warm-up)")
    if trl and not trl_available():
        raise UserError("the TRL peer row needs trl: pip install 'openpfi[dev]' (or pass --no-trl)")
    lm = load_model(model, device=device)
    tok = lm.tokenizer
    n_params = lm.info.num_parameters
    del lm
    batches = packed_batches(tok, WARMUP + steps, BATCH, SEQ)
    console.print("measuring matmul ceilings...")
    fp32 = matmul_gflops(torch.float32, device=device)
    bf16 = matmul_gflops(torch.bfloat16, device=device)
    console.print("measuring openpfi client step...")
    ours = _openpfi_loop(model, batches, steps, device)
    console.print("measuring plain HF + peft float32 loop...")
    hf = _hf_fp32_loop(model, batches, steps, int(tok.pad_token_id), device)
    trl_row = None
    if trl:
        console.print("measuring TRL SFTTrainer, bf16=True...")
        trl_row = trl_bf16_loop(model, batches, WARMUP, steps, device)
    # A LoRA step on a frozen base costs ~4 N flops per token (forward 2N + input-gradient 2N).
    ceiling_tokens = bf16 * 1e9 / (4 * n_params)
    result: dict[str, Any] = {
        "model": model,
        "device": device,
        "batch_size": BATCH,
        "seq_len": SEQ,
        "steps": steps,
        "openpfi_tokens_per_s": ours,
        "hf_fp32_tokens_per_s": hf,
        "speedup_vs_hf_fp32": ours / hf,
        "trl_bf16_tokens_per_s": trl_row,
        "speedup_vs_trl_bf16": ours / trl_row if trl_row else None,
        "trl_settings": TRL_SETTINGS if trl_row else None,
        "matmul_fp32_gflops": fp32,
        "matmul_bf16_gflops": bf16,
        "bf16_ceiling_tokens_per_s_estimate": ceiling_tokens,
        "fraction_of_bf16_ceiling": ours / ceiling_tokens,
        "num_parameters": n_params,
    }
    table = Table(title="bench train")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("openpfi client step", f"{ours:,.0f} tokens/s")
    table.add_row("plain HF + peft fp32 loop", f"{hf:,.0f} tokens/s")
    table.add_row("speed-up vs HF fp32", f"{ours / hf:.2f}x")
    if trl_row:
        table.add_row("TRL SFTTrainer, bf16=True", f"{trl_row:,.0f} tokens/s")
        table.add_row("speed-up vs TRL bf16", f"{ours / trl_row:.2f}x")
    table.add_row("matmul fp32 ceiling", f"{fp32:,.0f} GFLOP/s")
    table.add_row("matmul bf16 ceiling", f"{bf16:,.0f} GFLOP/s")
    table.add_row("bf16 ceiling in tokens/s (4N flops/token)", f"{ceiling_tokens:,.0f}")
    table.add_row("openpfi / bf16 ceiling", f"{ours / ceiling_tokens:.0%}")
    console.print(table)
    write_json(out, result)
    console.print(f"wrote {out}")
    return result
