"""Load a corpus as a flat list of :class:`Example` (one entry point for every source).

=============  ================================  ===================  ==================
source         natural client (``group``)        ``label``            module
=============  ================================  ===================  ==================
chitchat       sender id (1,113 who reply;       conversation topic
                1,315 with ``opening_turns``)   ``chitchat.py``
shakespeare    ``"play::CHARACTER"`` (1,328)     play                 ``shakespeare.py``
chatterbot     language (28)                     topic file stem      ``chatterbot.py``
jsonl          the client field                  the label field      ``jsonl.py``
hf             the client column                 the label column     ``hf.py``
=============  ================================  ===================  ==================

Loading is offline (package data is found with ``importlib.metadata``), cached
in-process and deterministic: the same call returns the same examples in the
same order.
"""

from __future__ import annotations

from collections.abc import Sequence

from openpfi.data import chatterbot, chitchat, hf, jsonl, shakespeare
from openpfi.data.rows import Fields
from openpfi.data.types import LoadResult
from openpfi.errors import UserError

SOURCES = ("chitchat", "shakespeare", "chatterbot", "jsonl", "hf")
PUBLIC_GROUP_SOURCES = ("chatterbot",)
"""Sources whose client groups are public (chatterbot's languages): the monitor may name them and
score public texts of each group (its fairness gap across groups)."""


def groups_are_public(source: str) -> bool:
    """Whether ``source``'s natural client groups are public (see ``PUBLIC_GROUP_SOURCES``)."""
    return source in PUBLIC_GROUP_SOURCES


def load_examples(
    source: str,
    *,
    path: str = "",
    client_field: str = "client",
    prompt_field: str = "prompt",
    response_field: str = "response",
    label_field: str = "",
    strict: bool = True,
    languages: Sequence[str] = (),
    messages_field: str = "messages",
    split: str = "",
    opening_turns: bool = False,
) -> LoadResult:
    """Examples of ``source``.

    ``path``, the ``*_field`` names and ``strict`` apply to ``jsonl`` and ``hf`` only, ``split``
    to ``hf``, ``opening_turns`` to ``chitchat`` (an empty ``client_field`` puts every row in one group, ``"all"``); ``languages``
    filters ``chatterbot`` (empty: all 28).
    """
    if source not in SOURCES:
        raise UserError(
            f"unknown data source {source!r}; choose one of: {', '.join(SOURCES)}"
        )
    if languages and source != "chatterbot":
        raise UserError(
            f"data.languages applies to source 'chatterbot' only, not {source!r}; remove it"
        )
    if opening_turns and source != "chitchat":
        raise UserError(f"data.opening_turns applies to source 'chitchat' only, not {source!r}; remove it")
    if split and source != "hf":
        raise UserError(f"data.split applies to source 'hf' only, not {source!r}; remove it")
    fields = Fields(prompt_field, response_field, client_field, label_field, messages_field)
    if source == "jsonl":
        return jsonl.load(path, fields, strict=strict)
    if source == "hf":
        return hf.load(path, fields, split=split, strict=strict)
    if source == "chitchat":
        examples, files = chitchat.load(opening_turns)
    elif source == "shakespeare":
        examples, files = shakespeare.load()
    else:
        examples, files = chatterbot.load(tuple(languages))
    return LoadResult(examples=list(examples), source_files=list(files))
