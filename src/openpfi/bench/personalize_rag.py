"""Retrieval in `openpfi bench personalize`: does each client's own retrieval help its own model?

Every run has ``rag.evaluate`` on: after the last round each client scores its own model on
its held-out data with and without the passages retrieved from its own documents (its
training texts for chitchat and shakespeare). The ``memory`` data set (bench/rag_data.py, BBQ
notes as documents, questions whose answer only the notes hold) adds exact match, and runs each
of its methods twice: trained on the questions alone, and trained with the retrieved passages
in the prompt (``rag.train``, method name ``<method>+rag``), with the same seeds. The
figures come from the clients' own stores (client/retrieval_eval.py): loss without / with
retrieval, exact match without / with, embed and search latency per query, and index build
time per 1,000 chunks.
"""

from __future__ import annotations

import json
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from openpfi.bench.rag_data import CATEGORIES, build_memory_set

MEMORY = "memory"
MEMORY_METHODS = ("fedavg", "local", "finetune", "ditto")
"""The methods run on ``memory``: the FedAvg and local-only bars and two personalized methods."""
TRAINED = "+rag"
"""Suffix of a method's variant trained with retrieved passages (``rag.train``), run on ``memory`` only."""
TRAIN_SET = "rag.train=true"
TRAIN_PASSAGE_TOKENS = 150.0
"""Passage tokens a ``memory`` training example gains with ``rag.train`` (about two notes of 50-75
tokens and the header within the 192-token budget), for the duration estimate."""


def runs_on(dataset: str, method: str) -> bool:
    """Whether ``method`` (a name of bench/personalize.py's METHODS) is run on ``dataset``."""
    if dataset == MEMORY:
        return method.removesuffix(TRAINED) in MEMORY_METHODS
    return not method.endswith(TRAINED)
KEYS = ("norag_loss", "rag_loss", "exact_match", "rag_exact_match", "retrieval_embed_ms", "retrieval_search_ms")


def dataset_sets(dataset: str, root: Path, clients: int) -> list[str]:
    """Config overrides for ``dataset`` (retrieval on; the memory set written once under ``root``)."""
    sets = ["rag.evaluate=true"]
    if dataset != MEMORY:
        return [f'data.source="{dataset}"', *sets]
    folder = root / "memory-data"
    data, docs = folder / "memory.jsonl", folder / "documents"
    if not data.is_file():
        build_memory_set(folder)
    n = clients_of(MEMORY, clients)
    return ['data.source="jsonl"', f"data.path={json.dumps(str(data))}", f"rag.documents={json.dumps(str(docs))}",
            f"data.num_clients={n}", f"federation.clients_per_round={n}", "data.min_examples=20",
            "rag.exact_match=true", "rag.max_new_tokens=12", *sets]


def clients_of(dataset: str, clients: int) -> int:
    """The clients a run of ``dataset`` has: ``memory`` has one per BBQ category, at most 8."""
    return min(clients, len(CATEGORIES)) if dataset == MEMORY else clients


EMBED_PER_S = 75.0
"""Chunks embedded per second on the project's 2-core machine (ASSETS.md: ~75 sentences/s)."""
GENERATE_TOKEN_S = 0.03
"""Seconds per generated token of the bundled model (greedy, batch of 8), for the exact-match answers."""


def extra_seconds(dataset: str, train_examples: int, eval_examples: int) -> float:
    """Per client: building its index, and for ``memory`` the exact-match answers (twice each)."""
    em = 2 * eval_examples * 12 * GENERATE_TOKEN_S / 4 if dataset == MEMORY else 0.0
    return train_examples / EMBED_PER_S + em


def retrieval_summary(latest: dict[str, dict[str, float]]) -> dict[str, float]:
    """Means over the clients of one run (their own figures), and index build seconds per 1,000 chunks."""
    out = {}
    for k in KEYS:
        values = [c[k] for c in latest.values() if k in c and c[k] == c[k]]
        if values:
            out[k] = float(statistics.fmean(values))
    built = sum(c.get("index_embedded", 0.0) for c in latest.values())
    if built:
        out["index_s_per_1k_chunks"] = 1000 * sum(c.get("index_build_s", 0.0) for c in latest.values()) / built
        out["index_chunks"] = float(statistics.fmean(c.get("index_chunks", 0.0) for c in latest.values()))
    return out


def seed_means(summaries: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The runs' retrieval figures averaged over seeds."""
    per = [s.get("retrieval", {}) for s in summaries]
    keys = sorted({k for p in per for k in p})
    return {k: float(statistics.fmean(p[k] for p in per if k in p)) for k in keys}


def _cells(r: dict[str, float]) -> list[str]:
    def f(k: str, fmt: str) -> str:
        return format(r[k], fmt) if k in r else ""
    return [f("norag_loss", ".4f"), f("rag_loss", ".4f"), f("exact_match", ".3f"), f("rag_exact_match", ".3f"),
            f("retrieval_embed_ms", ".1f"), f("retrieval_search_ms", ".3f"), f("index_s_per_1k_chunks", ".1f")]


HEAD = ("loss", "loss + retrieval", "EM", "EM + retrieval", "embed ms/query", "search ms/query", "build s/1k chunks")


def table(summary: dict[str, Any]) -> Table:
    t = Table(title="Each client's own model without and with retrieval over its own documents (means over clients)")
    for col in ("data", "method", *HEAD):
        t.add_column(col, justify="left" if col in ("data", "method") else "right", no_wrap=True)
    for dataset, d in summary.items():
        for name, v in d["methods"].items():
            if v.get("retrieval"):
                t.add_row(dataset[:6], name, *_cells(v["retrieval"]))
        t.add_section()
    return t


def markdown(summary: dict[str, Any]) -> str:
    lines = ["| dataset | method | " + " | ".join(HEAD) + " |", "|---|---|" + "---:|" * len(HEAD)]
    for dataset, d in summary.items():
        for v in d["methods"].values():
            if v.get("retrieval"):
                lines.append(f"| {dataset} | {v['label']} | " + " | ".join(_cells(v["retrieval"])) + " |")
    return "\n".join(lines)


def index_speed(n_docs: int = 1000, queries: int = 50) -> dict[str, float]:
    """Index build time per 1,000 chunks (fresh, and again with nothing changed), and per-query embed and
    search time against plain numpy search, on ``n_docs`` chitchat turns (one chunk each)."""
    import time

    import numpy as np

    from openpfi.client.retrieval import RetrievalIndex
    from openpfi.data import load_examples
    from openpfi.data.documents import training_documents
    from openpfi.models.embedder import load_embedder

    embedder = load_embedder()
    examples = load_examples("chitchat").examples
    docs = training_documents(examples[:n_docs])
    with tempfile.TemporaryDirectory() as tmp:
        index = RetrievalIndex(Path(tmp), embedder, 128, 32)
        fresh = index.build(docs)
        again = RetrievalIndex(Path(tmp), embedder, 128, 32).build(docs)
    asked = [e.prompt for e in examples[n_docs : n_docs + queries]]
    embed, search, plain = [], [], []
    table = index.index.reconstruct_n(0, index.index.ntotal)
    for q in asked:
        _, e_s, s_s = index.search(q, 3)
        embed.append(e_s)
        search.append(s_s)
        v = embedder.embed([q])
        t = time.perf_counter()
        np.argpartition(-(table @ v[0]), 3)[:3]
        plain.append(time.perf_counter() - t)
    per_k = 1000 / fresh.chunks
    return {"chunks": float(fresh.chunks), "build_s_per_1k_chunks": fresh.seconds * per_k,
            "rebuild_unchanged_s_per_1k_chunks": again.seconds * per_k, "embed_ms": 1000 * statistics.fmean(embed),
            "faiss_search_ms": 1000 * statistics.fmean(search), "numpy_search_ms": 1000 * statistics.fmean(plain)}


def speed_line(speed: dict[str, float]) -> str:
    return (f"retrieval index over {speed['chunks']:.0f} chunks: build {speed['build_s_per_1k_chunks']:.1f} s per 1,000 "
            f"chunks ({speed['rebuild_unchanged_s_per_1k_chunks']:.3f} s when nothing changed); per query embed "
            f"{speed['embed_ms']:.1f} ms + search {speed['faiss_search_ms']:.3f} ms (faiss; plain numpy "
            f"{speed['numpy_search_ms']:.3f} ms)")
