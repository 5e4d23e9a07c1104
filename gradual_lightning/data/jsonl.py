"""Your own questions from one JSON-lines file: the simplest way to bring a dataset.

One object per line (blank lines are skipped):
    {"question": "Who wrote Hamlet?", "answers": ["William Shakespeare", "Shakespeare"],
     "relation": "author", "id": "q1", "split": "test", "subject": "Hamlet", "popularity": 1.0}
Only `question` and `answers` (a list, or a single string) are required. `relation` defaults to
`default_relation`, `id` to `<file stem>-L<line number>`. Lines without `split` are split with a seeded
shuffle by `dev_fraction` / `test_fraction`; lines with it keep it (so a file can fix its test set).
"""

from __future__ import annotations

import json
from pathlib import Path

from gradual_lightning.data._sampling import apportion, resolve_path, rng_for
from gradual_lightning.io import read_utf8
from gradual_lightning.records import SPLITS, DataError, QARecord, QASplits, question_and_answers


def _parse_line(path: Path, lineno: int, line: str, default_relation: str) -> dict:
    where = f"{path}:{lineno}"
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    q, answers = question_and_answers(rec, where)
    split = rec.get("split")
    if split is not None and split not in SPLITS:
        raise DataError(f"{where}: field 'split' is {split!r}, expected one of {list(SPLITS)}")
    pop = rec.get("popularity")
    if pop is not None and (isinstance(pop, bool) or not isinstance(pop, (int, float))):
        raise DataError(f"{where}: field 'popularity' must be a number, got {pop!r}")
    return {
        "id": str(rec.get("id") or f"{path.stem}-L{lineno}"),
        "relation": str(rec.get("relation") or default_relation),
        "question": q,
        "answers": tuple(answers),
        "subject": str(rec.get("subject") or ""),
        "split": split,
        "popularity": None if pop is None else float(pop),
        "lineno": lineno,
    }


def load_jsonl(path, dev_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0,
               default_relation: str = "default", name: str = "jsonl") -> QASplits:
    """Load a JSON-lines file of questions; errors name the file, line number and field."""
    file = resolve_path(path, "JSONL file")
    if not file.is_file():
        raise DataError(f"JSONL path {file} is not a file")
    if not (0 <= dev_fraction <= 1 and 0 <= test_fraction <= 1 and dev_fraction + test_fraction <= 1):
        raise DataError(f"dev_fraction={dev_fraction} and test_fraction={test_fraction} must be in [0, 1] "
                        f"and sum to at most 1")
    rows, first_line = [], {}
    for lineno, line in enumerate(read_utf8(file).split("\n"), start=1):
        if not line.strip():
            continue
        row = _parse_line(file, lineno, line, default_relation)
        if row["id"] in first_line:
            raise DataError(f"{file}:{lineno}: field 'id' {row['id']!r} repeats line {first_line[row['id']]}")
        first_line[row["id"]] = lineno
        rows.append(row)
    if not rows:
        raise DataError(f"{file}: no records")

    free = [i for i, r in enumerate(rows) if r["split"] is None]
    rng_for(seed, "jsonl").shuffle(free)
    counts = apportion(len(free), {"test": test_fraction, "dev": dev_fraction,
                                   "train": 1.0 - dev_fraction - test_fraction})
    start = 0
    for split in ("test", "dev", "train"):
        for i in free[start:start + counts[split]]:
            rows[i]["split"] = split
        start += counts[split]

    out: dict[str, list[QARecord]] = {s: [] for s in SPLITS}
    for r in rows:  # file order within each split
        lineno = r.pop("lineno")
        try:
            out[r["split"]].append(QARecord(**r))
        except DataError as e:
            raise DataError(f"{file}:{lineno}: {e}") from None
    return QASplits(train=out["train"], dev=out["dev"], test=out["test"], name=name)
