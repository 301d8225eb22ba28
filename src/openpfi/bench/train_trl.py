"""The TRL peer row of `openpfi bench train`: TRL's ``SFTTrainer`` with ``bf16=True`` on the same batches.

This is the client loop FlowerTune and OpenFedLLM run: a float32 model with a peft LoRA
(r=8 on q_proj, v_proj), ``SFTTrainer`` with ``bf16=True`` (autocast over the float32
weights), AdamW, loss on the response tokens. It trains on exactly the packed sequences the
openpfi loop trains on (pre-tokenized ``input_ids`` and ``labels``; TRL's dataset preparation
is skipped), ``BATCH`` per step; tokens/s is timed between step ends after the warm-up steps.
``trl`` is an optional dependency (the dev extra): without it the row is missing and the
bench says so.
"""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from openpfi.data.tokenize import Encoded

TRL_SETTINGS = {
    "bf16": True, "gradient_checkpointing": "TRL default (True)", "optim": "adamw_torch", "lr": 1e-4,
    "lora": "r=8, alpha=16, q_proj+v_proj", "dataset": "pre-tokenized, skip_prepare_dataset",
}
"""What the TRL row ran with (everything else: SFTConfig's defaults)."""


def trl_available() -> bool:
    try:
        import trl  # noqa: F401
    except ImportError:
        return False
    return True


def drop_dequantized_marks(model: Any) -> None:
    """Let ``Trainer`` train a model loaded from a GGUF file.

    transformers dequantizes a GGUF file to full weights on load, yet keeps its GGUF quantizer
    on the model, and ``Trainer`` refuses to train a model marked quantized. Nothing is quantized
    any more, so the quantizer's marks go (transformers' own ``remove_quantization_config``).
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    quantizer.remove_quantization_config(model)
    for module in model.modules():
        if getattr(getattr(module, "config", None), "_is_quantized", False):
            module.config._is_quantized = False


def trl_bf16_loop(model_name: str, batches: Sequence[Sequence[Encoded]], warmup: int, steps: int, device: str) -> float:
    """Tokens/s of TRL's SFTTrainer (bf16=True) over ``batches`` (warm-up steps not timed)."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from openpfi.models.loader import load_model

    lm = load_model(model_name, device=device, dtype="float32")
    drop_dequantized_marks(lm.model)
    rows = [e for b in batches for e in b][: len(batches[0]) * (warmup + steps)]
    data = Dataset.from_dict({"input_ids": [list(e.input_ids) for e in rows], "labels": [list(e.labels) for e in rows]})
    stamps: list[float] = []

    class Stamp(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory(prefix="openpfi-bench-trl-") as tmp:
        args = SFTConfig(
            output_dir=tmp, bf16=True, use_cpu=device == "cpu", per_device_train_batch_size=len(batches[0]),
            max_steps=warmup + steps, learning_rate=1e-4, lr_scheduler_type="constant", optim="adamw_torch",
            report_to=[], save_strategy="no", logging_strategy="no", dataloader_num_workers=0,
            dataset_kwargs={"skip_prepare_dataset": True}, max_length=None, seed=0, disable_tqdm=True,
        )
        trainer = SFTTrainer(
            model=lm.model, args=args, train_dataset=data, processing_class=lm.tokenizer,
            peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
            callbacks=[Stamp()],
        )
        trainer.train()
    tokens = sum(len(e.input_ids) for e in rows[len(batches[0]) * warmup :])
    del trainer, lm
    gc.collect()
    return tokens / (stamps[-1] - stamps[warmup - 1])
