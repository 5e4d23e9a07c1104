"""The one question-answer record type every loader produces and every stage consumes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

SPLITS = ("train", "dev", "test")
# Checked when data is loaded: a probe puts each question and answer into ~10 prompts of several exemplars, so one
# runaway record (a whole document in 'question') exhausts memory mid-probe. Real factual QA is far below these
# (EntityQuestions: questions up to 178 characters, answers up to 88).
MAX_QUESTION_CHARS = 1000
MAX_ANSWER_CHARS = 300


class DataError(ValueError):
    """Bad input data. The message names the file/line/record and the field at fault."""


def question_and_answers(rec: dict, where: str) -> tuple[str, list[str]]:
    """The `question` and `answers` fields of one raw record (a lone answer string counts as a list), stripped and
    checked; errors start with `where` (file and line or record) and name the field."""
    q = rec.get("question")
    if not isinstance(q, str) or not q.strip():
        raise DataError(f"{where}: field 'question' is missing or empty")
    answers = rec.get("answers")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers:
        raise DataError(f"{where}: field 'answers' is missing or empty")
    if not all(isinstance(a, str) and a.strip() for a in answers):
        raise DataError(f"{where}: field 'answers' holds an empty or non-string answer: {answers!r}")
    q, answers = q.strip(), [a.strip() for a in answers]
    if len(q) > MAX_QUESTION_CHARS:
        raise DataError(f"{where}: field 'question' is {len(q)} characters long, over the limit of "
                        f"{MAX_QUESTION_CHARS} (MAX_QUESTION_CHARS in gradual_lightning/records.py); shorten or drop "
                        f"the record")
    longest = max(answers, key=len)
    if len(longest) > MAX_ANSWER_CHARS:
        raise DataError(f"{where}: field 'answers' holds an answer {len(longest)} characters long, over the limit "
                        f"of {MAX_ANSWER_CHARS} (MAX_ANSWER_CHARS in gradual_lightning/records.py); shorten or drop "
                        f"the record")
    return q, answers


@dataclass(frozen=True)
class QARecord:
    """One factual question. `answers` are aliases; the first is the canonical answer used in prompts."""

    id: str
    relation: str
    question: str
    answers: tuple[str, ...]
    subject: str = ""
    split: str = "train"
    popularity: float | None = None

    def __post_init__(self) -> None:
        where = f"record {self.id!r}"
        if not self.id:
            raise DataError("record with an empty 'id'")
        if not isinstance(self.question, str) or not self.question.strip():
            raise DataError(f"{where}: field 'question' is empty")
        if isinstance(self.answers, str) or not self.answers:
            raise DataError(f"{where}: field 'answers' must be a non-empty list of strings")
        if not all(isinstance(a, str) and a.strip() for a in self.answers):
            raise DataError(f"{where}: field 'answers' holds an empty or non-string alias: {list(self.answers)!r}")
        if self.split not in SPLITS:
            raise DataError(f"{where}: field 'split' is {self.split!r}, expected one of {SPLITS}")

    @property
    def answer(self) -> str:
        return self.answers[0]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["answers"] = list(self.answers)
        return d


@dataclass
class QASplits:
    """train (the pool that gets probed and trained on), dev (exemplars, model selection) and test."""

    train: list[QARecord] = field(default_factory=list)
    dev: list[QARecord] = field(default_factory=list)
    test: list[QARecord] = field(default_factory=list)
    name: str = "data"

    def __getitem__(self, split: str) -> list[QARecord]:
        if split not in SPLITS:
            raise KeyError(f"unknown split {split!r}; expected one of {SPLITS}")
        return getattr(self, split)

    def relations(self) -> list[str]:
        return sorted({r.relation for s in SPLITS for r in self[s]})

    def fingerprint(self) -> str:
        """Content hash of all splits: identical data gives the identical fingerprint on any machine."""
        return fingerprint_records([r for s in SPLITS for r in self[s]])


def fingerprint_records(records: Iterable[QARecord]) -> str:
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r.to_dict(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]
