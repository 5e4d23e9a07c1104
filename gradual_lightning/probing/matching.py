"""Answer matching: one declared, versioned normaliser and two match rules (SliCK exact, reference-code contains).

The normaliser is an ordered list of named steps, each idempotent, so its behaviour can be read at a glance and
changing it bumps NORMALIZER_VERSION (which is part of every probe cache key).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Callable, Sequence

NORMALIZER_VERSION = 1
MATCH_MODES = ("exact", "contains")
ABSTENTION_TEXT = "I don't know"  # what a stage with abstain_categories trains its questions to answer (R-Tuning)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "‘’“”–—"})


def first_line(text: str) -> str:
    """Answers are one line: anything after the first newline is the model running on to a new question."""
    return text.strip().split("\n", 1)[0]


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


NORMALIZER_STEPS: tuple[tuple[str, Callable[[str], str]], ...] = (
    ("first_line", first_line),
    ("lowercase", str.lower),
    ("strip_accents", strip_accents),
    ("punctuation_to_space", lambda s: s.translate(_PUNCT)),
    ("drop_articles", lambda s: _ARTICLES.sub(" ", s)),
    ("collapse_whitespace", lambda s: " ".join(s.split())),
)


def normalize(text: str) -> str:
    for _, step in NORMALIZER_STEPS:
        text = step(text)
    return text


def is_correct(prediction: str, answers: Sequence[str], mode: str = "exact") -> bool:
    """True if the prediction matches any gold alias.

    exact: normalised prediction equals a normalised alias (SliCK).
    contains: a normalised alias appears in the prediction's first line as whole words (the reference code's
    case-insensitive substring match, made word-bounded so that "Oman" does not match "Romania").
    """
    if mode not in MATCH_MODES:
        raise ValueError(f"probe.match={mode!r} is not one of {MATCH_MODES}")
    pred = normalize(prediction)
    if not pred:
        return False
    golds = [g for g in (normalize(a) for a in answers) if g]
    if mode == "exact":
        return pred in golds
    padded = f" {pred} "
    return any(f" {g} " in padded for g in golds)


def is_abstention(prediction: str, text: str = ABSTENTION_TEXT) -> bool:
    """True if the prediction is the abstention text, compared after the same normaliser as answers ("I don't
    know." and "i don’t know" are; "I dont know" and "I don't know Paris" are not). An abstention is a wrong answer
    wherever correctness is scored; train.py refuses an abstention text that would match some question's gold
    alias."""
    wanted = normalize(text)
    return bool(wanted) and normalize(prediction) == wanted
