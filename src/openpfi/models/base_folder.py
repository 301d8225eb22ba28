"""A Hugging Face folder for the base model, so that plain transformers + peft load openpfi's adapters.

- bundled models: the dequantized cache ``<cache>/models/<name>-<gguf size in bytes>/`` (written by
  the loader on first use; ``<cache>`` is ``~/.cache/openpfi`` unless OPENPFI_CACHE or XDG_CACHE_HOME say otherwise);
- tiny-random: ``<cache>/models/tiny-random-<first 12 hex of its weights sha256>/``, written here once;
- a model folder: the folder itself; a .gguf file: none (``openpfi export`` writes one).

tiny-random outside openpfi (transformers 5.23, torch 2.13)::

    tok = AutoTokenizer.from_pretrained(<SmolLM2-135M-Instruct folder>)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0); model = LlamaForCausalLM(cfg)   # float32
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from openpfi.models.registry import cache_dir

TINY_README = """# tiny-random

A randomly initialised 2-layer Llama (hidden size 64) with the SmolLM2-135M-Instruct tokenizer:
openpfi's test model. Weights sha256 (openpfi's state hash): {sha}. Rebuild it without openpfi
(transformers 5.23, torch 2.13):

```python
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
tok = AutoTokenizer.from_pretrained("<this folder or the SmolLM2-135M-Instruct folder>")
cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                  tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
torch.manual_seed(0)
model = LlamaForCausalLM(cfg)
```
"""


def tiny_random_folder(model: Any, tokenizer: Any, sha256: str) -> Path:
    """The tiny-random base as a Hugging Face folder in the cache (written once, atomically)."""
    root = cache_dir() / "models"
    folder = root / f"tiny-random-{sha256[:12]}"
    if (folder / "config.json").is_file():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=root))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "README.md").write_text(TINY_README.format(sha=sha256))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process wrote it first
            if not (folder / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return folder
