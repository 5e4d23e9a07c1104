"""EntityQuestions (Sciavolino et al., 2021), the dataset of the published SliCK study, from a local directory.

Layout: `{train,dev,test}/P<id>.<split>.json`, each a JSON list of `{"question": str, "answers": [str, ...]}`,
plus an optional `relation_query_templates.json` mapping `P<id>` to a question template with `[X]` for the
subject (used to recover `subject`; without it `subject` is "").
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from gradual_lightning.data._sampling import as_list, positive_int, resolve_path, rng_for
from gradual_lightning.io import read_utf8
from gradual_lightning.records import SPLITS, DataError, QARecord, QASplits, question_and_answers

_FILE = re.compile(r"^(?P<rel>P\d+)\.(?P<split>train|dev|test)\.json$")


def _relation_files(root: Path) -> dict[str, set[str]]:
    """Relation id -> the splits it has a file for, relations in numeric order (P17 before P106)."""
    found: dict[str, set[str]] = {}
    for s in SPLITS:
        for f in (root / s).glob("P*.json"):
            if (m := _FILE.match(f.name)) and m["split"] == s:
                found.setdefault(m["rel"], set()).add(s)
    return dict(sorted(found.items(), key=lambda item: int(item[0][1:])))


def _read_json(path: Path, kind: type, what: str):
    """The file's JSON value, which must be a `kind`; errors name the file."""
    try:
        value = json.loads(read_utf8(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, kind):
        raise DataError(f"{path}: expected {what}, got {type(value).__name__}")
    return value


def _subject_patterns(root: Path) -> dict[str, re.Pattern]:
    path = root / "relation_query_templates.json"
    if not path.is_file():
        return {}
    templates = _read_json(path, dict, "a JSON object mapping relation id to template")
    return {rel: re.compile("^" + re.escape(t).replace(re.escape("[X]"), "(?P<x>.+)") + "$")
            for rel, t in templates.items() if isinstance(t, str) and "[X]" in t}


def _read_file(path: Path) -> list[tuple[str, list[str]]]:
    """Validated (question, answers) pairs; errors name the file, the record index and the field."""
    data = _read_json(path, list, "a JSON list of records")
    out = []
    for i, rec in enumerate(data):
        where = f"{path}: record {i}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object with 'question' and 'answers', got {type(rec).__name__}")
        out.append(question_and_answers(rec, where))
    return out


def _caps(max_per_relation) -> dict[str, int | None]:
    """Per-split caps from an int, null or a mapping split -> int or null; errors name data.max_per_relation."""
    key = "data.max_per_relation"
    if not hasattr(max_per_relation, "keys"):
        return dict.fromkeys(SPLITS, positive_int(max_per_relation, key, allow_none=True))
    unknown = sorted(set(max_per_relation.keys()) - set(SPLITS))
    if unknown:
        raise DataError(f"{key}: unknown split(s) {unknown}; the splits are {list(SPLITS)}")
    return {s: positive_int(max_per_relation.get(s), f"{key}.{s}", allow_none=True) for s in SPLITS}


def load_entity_questions(path, relations=None, max_per_relation=None, single_answer: bool = True,
                          seed: int = 0, name: str = "entity_questions") -> QASplits:
    """Load EntityQuestions relations. `max_per_relation` (an int, or a mapping like {train: 500, dev: 100})
    keeps a seeded random sample per relation and split; `single_answer` drops questions with several
    answers, as both published studies do. Ids are `P17-train-00042` (index in the original file)."""
    root = resolve_path(path, "EntityQuestions directory")
    if not root.is_dir():
        raise DataError(f"EntityQuestions path {root} is not a directory")
    caps = _caps(max_per_relation)
    found = _relation_files(root)
    if not found:
        raise DataError(f"{root}: no relation files found (expected {{train,dev,test}}/P<id>.<split>.json)")
    complete = [r for r, splits in found.items() if len(splits) == len(SPLITS)]
    rels = as_list(relations) or list(found)
    unknown = [r for r in rels if r not in found]
    if unknown:
        raise DataError(f"EntityQuestions: unknown relation(s) {unknown} in {root}; available: {complete}")
    missing = [f"{s}/{r}.{s}.json" for r in rels for s in SPLITS if s not in found[r]]
    if missing:
        raise DataError(f"EntityQuestions in {root}: missing file(s) {missing}; restore them, or leave their "
                        f"relations out with data.relations (complete relations: {complete})")
    patterns = _subject_patterns(root)

    out: dict[str, list[QARecord]] = {s: [] for s in SPLITS}
    for rel in rels:
        for split in SPLITS:
            path_ = root / split / f"{rel}.{split}.json"
            rows = [(i, q, a) for i, (q, a) in enumerate(_read_file(path_)) if not single_answer or len(a) == 1]
            cap = caps[split]
            if cap is not None and cap < len(rows):
                rows = sorted(rng_for(seed, "entity_questions", rel, split).sample(rows, cap))
            pat = patterns.get(rel)
            for i, q, answers in rows:
                m = pat.match(q) if pat else None
                out[split].append(QARecord(id=f"{rel}-{split}-{i:05d}", relation=rel, question=q,
                                           answers=tuple(answers), subject=m["x"] if m else "", split=split))
    return QASplits(train=out["train"], dev=out["dev"], test=out["test"], name=name)
