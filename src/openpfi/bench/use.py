"""`openpfi bench use`: export round trip and chat speed on a small run of the bundled model.

1. A small Ditto run (2 clients, 1 round; kept in ``<out stem>.runs/run`` and reused).
2. Export round trip, for the global model and one client's personal model: logits of the
   ``--format peft`` folder loaded by plain transformers + peft (float32) against openpfi's own
   model in float32, and of the ``--format merged`` folder against the peft one (max |diff| over
   the tokens of a few prompts).
3. Chat: the client's personal model as ``openpfi chat`` loads it (the run's compute dtype),
   greedy replies of up to ``max_new_tokens`` to a few prompts: first-token latency (prompt
   processing + one step) and decoding tokens/s after it, median over the prompts.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from openpfi.assembly.run_model import load_run_model, run_clients
from openpfi.bench.common import write_json
from openpfi.config import load_config
from openpfi.recipes import federated_sft
from openpfi.recipes.chat import open_session
from openpfi.recipes.export import export
from openpfi.runfolder import RunFolder

PROMPTS = (
    "Hello there, what should I cook tonight?",
    "What is the capital of France?",
    "Can you suggest a good book for a rainy weekend?",
    "How do I keep my plants alive in winter?",
    "Tell me something interesting about the ocean.",
)


def small_run(folder: Path, model: str) -> RunFolder:
    sets = [f"model.name={model}", "data.num_clients=2", "federation.clients_per_round=2", "federation.rounds=1",
            "client.local_steps=4", "client.batch_size=4", "client.max_length=128", "client.lr=5e-4",
            "data.min_examples=40", "data.max_examples=120", "monitor.enabled=false", 'personalization.method="ditto"']
    if RunFolder(folder).completed_rounds() == [1]:
        return RunFolder(folder)
    return federated_sft.start(load_config(None, sets), folder, force=True)


def _logits(model: Any, tokenizer: Any) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(tokenizer(p, return_tensors="pt").input_ids).logits.float() for p in PROMPTS]


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def round_trip(run: RunFolder, client: str | None, where: Path) -> dict[str, float]:
    """Max |logit difference|: peft export vs openpfi (float32), merged export vs peft export."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    rm = load_run_model(run.path, client=client, dtype="float32")
    tok = rm.shared.loaded.tokenizer
    shared = rm.shared
    ours = _logits(shared.model, tok)
    name = client or "global"
    peft_dir = export(run.path, where / f"{name}-peft", "peft", client=client, force=True)
    merged_dir = export(run.path, where / f"{name}-merged", "merged", client=client, force=True)
    peft = _logits(AutoPeftModelForCausalLM.from_pretrained(str(peft_dir)).eval(), tok)
    merged = _logits(AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval(), tok)
    return {"peft_vs_openpfi": _max_diff(peft, ours), "merged_vs_peft": _max_diff(merged, peft),
            "merged_vs_openpfi": _max_diff(merged, ours)}


def chat_speed(run: RunFolder, client: str, max_new_tokens: int) -> dict[str, Any]:
    session = open_session(run.path, client, max_new_tokens=max_new_tokens, temperature=0.0)
    list(session.reply("Hi!"))  # warm-up
    rows = []
    for p in PROMPTS:
        session.reset()
        list(session.reply(p))
        s = session.last
        rows.append({"prompt_tokens": s.prompt_tokens, "new_tokens": s.new_tokens, "first_token_s": s.first_token_s,
                     "tokens_per_s": s.tokens_per_s})
    return {
        "dtype": session.model.shared.loaded.info.dtype,
        "first_token_s_median": statistics.median(r["first_token_s"] for r in rows),
        "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in rows),
        "replies": rows,
    }


def run_use_bench(out: Path, model: str = "smollm2-135m-instruct", max_new_tokens: int = 48,
                  console: Console | None = None) -> dict[str, Any]:
    console = console or Console()
    runs = out.with_suffix("").with_name(out.stem + ".runs")
    run = small_run(runs / "run", model)
    client = run_clients(run)[0]
    trip = {"global": round_trip(run, None, runs), "personal": round_trip(run, client, runs)}
    speed = chat_speed(run, client, max_new_tokens)
    payload = {"model": model, "run": str(run.path), "client": client, "max_new_tokens": max_new_tokens,
               "round_trip_max_abs_logit_diff": trip, "chat": speed}
    write_json(out, payload)
    table = Table(title=f"bench use: {model}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for kind, d in trip.items():
        for k, v in d.items():
            table.add_row(f"{kind}: {k} (max |logit diff|)", f"{v:.2e}")
    table.add_row(f"chat first token, median ({speed['dtype']})", f"{speed['first_token_s_median']:.3f} s")
    table.add_row("chat decoding after it, median", f"{speed['tokens_per_s_median']:.1f} tokens/s")
    console.print(table)
    return payload
