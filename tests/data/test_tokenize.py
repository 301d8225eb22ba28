from __future__ import annotations

import pytest

from openpfi.data.tokenize import IGNORE, Encoded, collate, encode_chat, encode_messages
from openpfi.models.loader import load_tokenizer


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("tiny-random")


def test_loss_only_on_response_tokens(tok):
    enc = encode_chat(tok, "How are you?", "Fine, thanks.", 128)
    targets = [t for t in enc.labels if t != IGNORE]
    text = tok.decode(targets)
    assert text.startswith("Fine, thanks.")
    assert text.endswith("<|im_end|>")  # the model learns to end its turn
    assert "How are you?" not in text
    n_prompt = enc.labels.index(next(t for t in enc.labels if t != IGNORE))
    assert "How are you?" in tok.decode(enc.input_ids[:n_prompt])
    assert list(enc.labels[n_prompt:]) == list(enc.input_ids[n_prompt:])


def test_truncation_keeps_response(tok):
    enc = encode_chat(tok, "word " * 300, "short answer", 64)
    assert len(enc.input_ids) <= 64
    assert "short answer" in tok.decode([t for t in enc.labels if t != IGNORE])


def test_collate_pads_right_and_masks():
    a = Encoded((1, 2, 3), (IGNORE, 2, 3))
    b = Encoded((4,), (4,))
    batch = collate([a, b], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 2, 3], [4, IGNORE, IGNORE]]


def test_a_single_turn_conversation_encodes_as_encode_chat(tok):
    # Prepare
    messages = [{"role": "user", "content": "How are you?"}, {"role": "assistant", "content": "Fine, thanks."}]
    # Execute
    enc = encode_messages(tok, messages, 128)
    # Assert
    assert enc == encode_chat(tok, "How are you?", "Fine, thanks.", 128)


def test_multi_turn_loss_on_every_assistant_turn_and_no_system_or_user_turn(tok):
    messages = [
        {"role": "system", "content": "You answer in French."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Bonjour"},
        {"role": "user", "content": "Thanks"},
        {"role": "assistant", "content": "De rien"},
    ]
    enc = encode_messages(tok, messages, 256)
    spans, cur = [], []
    for i, t in zip(enc.input_ids, enc.labels, strict=True):
        if t != IGNORE:
            assert t == i
            cur.append(t)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    spans += [tok.decode(cur)] if cur else []
    assert spans == ["Bonjour<|im_end|>", "De rien<|im_end|>"]
    whole = tok.decode(enc.input_ids)
    assert "You answer in French." in whole and "Thanks" in whole


def test_multi_turn_truncation_keeps_the_last_answer(tok):
    messages = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "long " * 100},
                {"role": "user", "content": "and?"}, {"role": "assistant", "content": "short answer"}]
    enc = encode_messages(tok, messages, 64)
    assert len(enc.input_ids) <= 64
    assert tok.decode([t for t in enc.labels if t != IGNORE]).endswith("short answer<|im_end|>")
