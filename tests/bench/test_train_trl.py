"""The TRL peer row of `openpfi bench train`: it trains the bundled GGUF model and times real steps."""

from __future__ import annotations

import pytest
from transformers.trainer_utils import validate_quantization_for_training

from openpfi.bench.common import packed_batches
from openpfi.bench.train_trl import drop_dequantized_marks, trl_available, trl_bf16_loop
from openpfi.models.loader import load_model

pytestmark = pytest.mark.skipif(not trl_available(), reason="the dev extra's trl is not installed")


@pytest.mark.slow
def test_bundled_gguf_model_is_trainable_by_trainer_once_its_marks_go() -> None:
    lm = load_model("smollm2-135m-instruct", dtype="float32")
    assert lm.model.is_quantized  # transformers keeps the GGUF quantizer on the dequantized model
    with pytest.raises(ValueError, match="quantized"):
        validate_quantization_for_training(lm.model)
    drop_dequantized_marks(lm.model)
    assert not getattr(lm.model, "is_quantized", False) and getattr(lm.model, "hf_quantizer", None) is None
    validate_quantization_for_training(lm.model)  # Trainer's own check passes now
    assert all(p.dtype.is_floating_point for p in lm.model.parameters())


def test_trl_loop_times_the_steps_after_warm_up_on_tiny_random() -> None:
    tok = load_model("tiny-random").tokenizer
    batches = packed_batches(tok, 3, 2, 32)
    tokens_per_s = trl_bf16_loop("tiny-random", batches, warmup=1, steps=2, device="cpu")
    assert tokens_per_s > 0
