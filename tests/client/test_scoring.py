from __future__ import annotations

import pytest
import torch

from openpfi.client.scoring import ModelScorer
from openpfi.client.train import evaluate_loss
from openpfi.data.tokenize import encode_chat
from openpfi.models.loader import load_model
from openpfi.monitor.types import ScoreItem


@pytest.fixture(scope="module")
def model32():
    return load_model("tiny-random", "cpu", "float32")


def direct(model, tokenizer, item: ScoreItem) -> tuple[float, int]:
    """The definition: one full forward over prompt + continuation, log-softmax over all logits."""
    if item.chat:
        head = tokenizer.apply_chat_template([{"role": "user", "content": item.prompt}], tokenize=True,
                                             add_generation_prompt=True)
        head = list(head["input_ids"] if hasattr(head, "keys") else head)
    else:
        head = tokenizer(item.prompt, add_special_tokens=False)["input_ids"] or [0]  # 0 = <|endoftext|>
    cont = tokenizer(item.continuation, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([head + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0]
    total = sum(float(logp[len(head) + j - 1, t]) for j, t in enumerate(cont))
    return total, len(cont)


ITEMS = [
    ScoreItem("Is the sky blue?", "Yes, it is.", chat=True),
    ScoreItem("Is the sky blue?", "No.", chat=True),
    ScoreItem("Is the sky blue?", "I'm sorry, but I can't help with that.", chat=True),
    ScoreItem("", "The poor are really ignorant about how to handle the money they do have.", chat=False),
    ScoreItem("To be, or not to be,", " that is the question", chat=False),
    ScoreItem("Hola", "¿Qué tal?", chat=True),
]


def test_scorer_equals_a_direct_full_forward_per_item(model32):
    # Prepare
    scorer = ModelScorer(model32.model, model32.tokenizer, max_batch_tokens=1024)
    # Execute: shared prompts are packed into one row with a block mask
    got = scorer.logprobs(ITEMS)
    # Assert
    for item, (lp, n) in zip(ITEMS, got, strict=True):
        want, n_want = direct(model32.model, model32.tokenizer, item)
        assert n == n_want > 0
        assert lp == pytest.approx(want, abs=1e-3), item


def test_batching_and_order_do_not_change_scores(model32):
    scorer = ModelScorer(model32.model, model32.tokenizer)
    once = scorer.logprobs(ITEMS)
    each = [scorer.logprobs([it])[0] for it in reversed(ITEMS)][::-1]
    assert [n for _, n in once] == [n for _, n in each]
    assert [lp for lp, _ in once] == pytest.approx([lp for lp, _ in each], abs=1e-3)
    assert scorer.logprobs([]) == []


def test_bf16_scorer_is_close_to_float32():
    lm = load_model("tiny-random", "cpu", "bfloat16")
    got = ModelScorer(lm.model, lm.tokenizer).logprobs(ITEMS)
    lm.model.float()
    for item, (lp, n) in zip(ITEMS, got, strict=True):
        want, n_want = direct(lm.model, lm.tokenizer, item)
        assert n == n_want
        assert lp == pytest.approx(want, rel=0.05, abs=0.5)


def test_rows_split_across_small_packs_give_the_same_scores(model32):
    wide = ModelScorer(model32.model, model32.tokenizer).logprobs(ITEMS)
    narrow = ModelScorer(model32.model, model32.tokenizer, max_batch_tokens=1024, pack_tokens=32).logprobs(ITEMS)
    assert [n for _, n in narrow] == [n for _, n in wide]
    assert [lp for lp, _ in narrow] == pytest.approx([lp for lp, _ in wide], abs=1e-3)


def test_heldout_examples_scored_in_the_same_pass_match_evaluate_loss(model32):
    # Prepare: two chat examples as the client holds them (loss on the response only)
    tok = model32.tokenizer
    examples = [encode_chat(tok, "How are you?", "Fine, thanks.", 64), encode_chat(tok, "Hi", "Hello there!", 64)]
    # Execute
    scores, held = ModelScorer(model32.model, tok).score(ITEMS[:2], examples)
    # Assert
    loss, n = evaluate_loss(model32.model, examples, 8, tok.pad_token_id)
    assert sum(k for _, k in held) == n
    assert -sum(lp for lp, _ in held) / n == pytest.approx(loss, abs=1e-4)
    assert len(scores) == 2
