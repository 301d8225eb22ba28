"""Shared helpers of the benchmarks: fixed batches, matmul ceilings, machine facts, JSON output."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from openpfi.assembly.manifest import machine, package_versions
from openpfi.data import load_examples
from openpfi.data.tokenize import IGNORE, Encoded, encode_chat


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Measured GFLOP/s of an n^3 matrix product (2 n^3 flops), best of ``repeats``."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    a @ b  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def packed_batches(tokenizer: Any, count: int, batch_size: int, seq_len: int, source: str = "chitchat") -> list[list[Encoded]]:
    """``count`` batches of ``batch_size`` sequences of exactly ``seq_len`` tokens.

    Real chat examples are encoded with the chat template (loss on response
    tokens only) and concatenated until each sequence is full, so every loop in
    a benchmark sees the same tokens and the same targets.
    """
    examples = load_examples(source).examples
    seqs: list[Encoded] = []
    ids: list[int] = []
    labels: list[int] = []
    i = 0
    while len(seqs) < count * batch_size:
        e = examples[i % len(examples)]
        i += 1
        enc = encode_chat(tokenizer, e.prompt, e.response, seq_len)
        ids += enc.input_ids
        labels += enc.labels
        if len(ids) >= seq_len:
            lab = labels[:seq_len]
            if all(x == IGNORE for x in lab[1:]):
                lab = list(lab)
                lab[-1] = ids[seq_len - 1]
            seqs.append(Encoded(tuple(ids[:seq_len]), tuple(lab)))
            ids, labels = [], []
    return [seqs[k * batch_size : (k + 1) * batch_size] for k in range(count)]


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "machine": machine(), "packages": package_versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
