"""EntityQuestions and JSONL loaders on small fixtures, the real shared data when present, the Hydra configs."""

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gradual_lightning.data import load_data, load_entity_questions, load_jsonl
from gradual_lightning.records import MAX_ANSWER_CHARS, MAX_QUESTION_CHARS, SPLITS, DataError, QASplits

REPO = Path(__file__).resolve().parents[1]
REAL_EQ = REPO / ".." / "shared" / "data" / "entity_questions"


def _write_eq(root: Path, files: dict[str, object], templates: bool = True) -> Path:
    """files: {"train/P17.train.json": [records] or raw text}."""
    for split in SPLITS:
        (root / split).mkdir(parents=True, exist_ok=True)
    for rel_path, content in files.items():
        text = content if isinstance(content, str) else json.dumps(content)
        (root / rel_path).write_text(text, encoding="utf-8")
    if templates:
        (root / "relation_query_templates.json").write_text(json.dumps({
            "P17": "Which country is [X] located in?", "P36": "What is the capital of [X]?"}))
    return root


def _country(i, answers=None):
    return {"question": f"Which country is Town{i} located in?", "answers": answers or [f"Country{i % 3}"]}


@pytest.fixture
def eq_dir(tmp_path):
    files = {}
    for split, n in (("train", 10), ("dev", 4), ("test", 4)):
        files[f"{split}/P17.{split}.json"] = [_country(i) for i in range(n)] + [_country(99, ["A", "B"])]
        files[f"{split}/P36.{split}.json"] = [{"question": f"What is the capital of Land{i}?",
                                               "answers": [f"Cap{i}"]} for i in range(n)]
    return _write_eq(tmp_path / "eq", files)


# --- EntityQuestions -------------------------------------------------------------------------------------------


def test_entity_questions_fixture(eq_dir):
    data = load_entity_questions(eq_dir)
    assert isinstance(data, QASplits) and data.name == "entity_questions"
    assert (len(data.train), len(data.dev), len(data.test)) == (20, 8, 8)  # the two-answer question is dropped
    assert data.relations() == ["P17", "P36"]
    first = data.train[0]
    assert first.id == "P17-train-00000" and first.relation == "P17" and first.split == "train"
    assert first.subject == "Town0" and first.answers == ("Country0",) and first.popularity is None
    assert data.test[-1].subject == "Land3"
    multi = load_entity_questions(eq_dir, single_answer=False, relations=["P17"])
    assert len(multi.train) == 11 and multi.train[-1].answers == ("A", "B") and multi.train[-1].id == "P17-train-00010"


def test_entity_questions_sampling_is_seeded(eq_dir):
    a = load_entity_questions(eq_dir, relations="P17", max_per_relation=3, seed=1)
    assert (len(a.train), len(a.dev), len(a.test)) == (3, 3, 3)
    assert a.fingerprint() == load_entity_questions(eq_dir, relations="P17", max_per_relation=3, seed=1).fingerprint()
    others = {load_entity_questions(eq_dir, relations="P17", max_per_relation=3, seed=s).fingerprint()
              for s in range(2, 6)}
    assert others - {a.fingerprint()}
    per_split = load_entity_questions(eq_dir, max_per_relation={"train": 5, "dev": 1, "test": None})
    assert (len(per_split.train), len(per_split.dev), len(per_split.test)) == (10, 2, 8)


def test_entity_questions_without_templates_has_empty_subject(tmp_path):
    files = {f"{s}/P17.{s}.json": [_country(1)] for s in SPLITS}
    data = load_entity_questions(_write_eq(tmp_path, files, templates=False))
    assert data.train[0].subject == ""


def test_entity_questions_not_utf8_names_the_file(eq_dir):
    latin1 = b'[\n{"question": "Where is K\xf6ln?", "answers": ["x"]}]'
    (eq_dir / "dev" / "P36.dev.json").write_bytes(latin1)
    where = rf"P36\.dev\.json:2: not valid UTF-8: byte 0xf6 at byte offset {latin1.index(0xf6)}"
    with pytest.raises(DataError, match=where):
        load_entity_questions(eq_dir)


def test_entity_questions_unknown_relation_lists_available(eq_dir):
    with pytest.raises(DataError, match=r"unknown relation.*'P999'.*available: \['P17', 'P36'\]"):
        load_entity_questions(eq_dir, relations=["P17", "P999"])


def test_entity_questions_missing_split_file_is_named(eq_dir):
    (eq_dir / "dev" / "P17.dev.json").unlink()
    expected = r"missing file\(s\) \['dev/P17\.dev\.json'\].*data\.relations \(complete relations: \['P36'\]\)"
    for relations in (None, ["P17"], "P36,P17"):
        with pytest.raises(DataError, match=expected):
            load_entity_questions(eq_dir, relations=relations)
    assert load_entity_questions(eq_dir, relations="P36").relations() == ["P36"]


@pytest.mark.parametrize("value, key", [
    (-5, r"data\.max_per_relation=-5"), (0, r"data\.max_per_relation=0"), (2.5, r"data\.max_per_relation=2\.5"),
    (True, r"data\.max_per_relation=True"), ("10", r"data\.max_per_relation='10'"),
    ({"train": 5, "dev": 0}, r"data\.max_per_relation\.dev=0"),
    ({"train": 5, "valid": 2}, r"data\.max_per_relation: unknown split\(s\) \['valid'\]"),
])
def test_entity_questions_bad_max_per_relation_names_the_key(eq_dir, value, key):
    with pytest.raises(DataError, match=key):
        load_entity_questions(eq_dir, max_per_relation=value)
    with pytest.raises(DataError, match=key):
        load_data(_data_cfg("entity_questions", path=str(eq_dir), max_per_relation=value))


def test_entity_questions_missing_directory(tmp_path):
    with pytest.raises(DataError, match="EntityQuestions directory not found.*no_such_dir"):
        load_entity_questions(tmp_path / "no_such_dir")


@pytest.mark.parametrize("content, expected", [
    ("[{not json", r"P17\.train\.json: not valid JSON"),
    ('{"question": "q", "answers": ["a"]}', r"P17\.train\.json: expected a JSON list"),
    ([_country(0), {"answers": ["x"]}], r"P17\.train\.json: record 1: field 'question' is missing"),
    ([_country(0), _country(1), {"question": "q?", "answers": []}],
     r"P17\.train\.json: record 2: field 'answers' is missing or empty"),
    ([{"question": "q?", "answers": ["ok", ""]}], r"record 0: field 'answers' holds an empty"),
])
def test_entity_questions_bad_files(tmp_path, content, expected):
    files = {f"{s}/P17.{s}.json": [_country(0)] for s in SPLITS}
    files["train/P17.train.json"] = content
    with pytest.raises(DataError, match=expected):
        load_entity_questions(_write_eq(tmp_path, files))


@pytest.mark.skipif(not REAL_EQ.is_dir(), reason=f"EntityQuestions not present at {REAL_EQ}")
def test_entity_questions_real_data():
    data = load_entity_questions(REAL_EQ, relations=["P17", "P36"], max_per_relation=20, seed=0)
    assert (len(data.train), len(data.dev), len(data.test)) == (40, 40, 40)
    assert data.relations() == ["P17", "P36"]
    assert all(r.subject and r.subject in r.question for s in SPLITS for r in data[s])
    assert all(len(r.answers) == 1 for s in SPLITS for r in data[s])
    assert all(r.id.startswith(f"{r.relation}-{r.split}-") for s in SPLITS for r in data[s])
    with pytest.raises(DataError, match=r"unknown relation.*'P30'.*available: \['P17', 'P19'"):
        load_entity_questions(REAL_EQ, relations=["P30"])


# --- JSONL -----------------------------------------------------------------------------------------------------


def _write_lines(path: Path, lines) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_fields_defaults_and_fixed_splits(tmp_path):
    path = _write_lines(tmp_path / "qs.jsonl", [
        {"question": "Who wrote Hamlet?", "answers": ["William Shakespeare", "Shakespeare"], "relation": "author",
         "id": "q1", "split": "test", "subject": "Hamlet", "popularity": 3},
        "",
        {"question": "What is 2+2?", "answers": "4"},
    ])
    data = load_jsonl(path, dev_fraction=0.0, test_fraction=0.0)
    assert [r.id for r in data.test] == ["q1"] and data.test[0].popularity == 3.0
    assert data.test[0].answers == ("William Shakespeare", "Shakespeare") and data.test[0].subject == "Hamlet"
    (r,) = data.train
    assert r.id == "qs-L3" and r.relation == "default" and r.answers == ("4",) and r.split == "train"


def test_jsonl_seeded_split(tmp_path):
    path = _write_lines(tmp_path / "many.jsonl", [{"question": f"Q{i}?", "answers": [f"A{i}"]} for i in range(50)])
    a = load_jsonl(path, dev_fraction=0.2, test_fraction=0.1, seed=7)
    assert (len(a.train), len(a.dev), len(a.test)) == (35, 10, 5)
    assert load_jsonl(path, dev_fraction=0.2, test_fraction=0.1, seed=7).fingerprint() == a.fingerprint()
    b = load_jsonl(path, dev_fraction=0.2, test_fraction=0.1, seed=8)
    assert {r.id for r in b.test} != {r.id for r in a.test}
    assert [r.id for r in a.train] == sorted((r.id for r in a.train), key=lambda i: int(i.split("-L")[1]))


@pytest.mark.parametrize("line, expected", [
    ('{"question": "Q?", "answers": ["A"]', r"bad\.jsonl:2: invalid JSON"),
    ('["Q?", "A"]', r"bad\.jsonl:2: expected a JSON object"),
    ('{"answers": ["A"]}', r"bad\.jsonl:2: field 'question' is missing"),
    ('{"question": "Q?", "answers": []}', r"bad\.jsonl:2: field 'answers' is missing or empty"),
    ('{"question": "Q?"}', r"bad\.jsonl:2: field 'answers' is missing or empty"),
    ('{"question": "Q?", "answers": ["A"], "split": "valid"}', r"bad\.jsonl:2: field 'split' is 'valid'"),
    ('{"question": "Q2?", "answers": ["A"], "id": "x"}', r"bad\.jsonl:2: field 'id' 'x' repeats line 1"),
])
def test_jsonl_errors_name_file_line_and_field(tmp_path, line, expected):
    path = _write_lines(tmp_path / "bad.jsonl", ['{"question": "Q1?", "answers": ["A"], "id": "x"}', line])
    with pytest.raises(DataError, match=expected):
        load_jsonl(path)


def test_jsonl_not_utf8_names_file_line_and_offset_without_dumping_bytes(tmp_path):
    good = json.dumps({"question": "Q" * 50 + "?", "answers": ["A"]}) + "\n"
    path = tmp_path / "latin1.jsonl"
    path.write_bytes((good * 100).encode() + b'{"question": "Caf\xe9?", "answers": ["A"]}\n' + good.encode() * 100)
    offset = len(good.encode()) * 100 + len(b'{"question": "Caf')
    for load in (load_jsonl, lambda p: load_data(_data_cfg("jsonl", path=str(p)))):
        with pytest.raises(DataError, match=rf"latin1\.jsonl:101: not valid UTF-8: byte 0xe9 at byte offset "
                                            rf"{offset} .*save the file as UTF-8") as e:
            load(path)
        assert len(str(e.value)) < 300 and "QQQ" not in repr(e.value)


def test_question_and_answer_length_limits_are_checked_at_load_time(tmp_path):
    longest_ok = {"question": "Q" * (MAX_QUESTION_CHARS - 1) + "?", "answers": ["A" * MAX_ANSWER_CHARS]}
    path = _write_lines(tmp_path / "long.jsonl", [longest_ok, {"question": "Q" * 10**6 + "?", "answers": ["A"]}])
    with pytest.raises(DataError, match=rf"long\.jsonl:2: field 'question' is {10**6 + 1} characters long, over "
                                        rf"the limit of {MAX_QUESTION_CHARS} \(MAX_QUESTION_CHARS"):
        load_jsonl(path)
    _write_lines(path, [longest_ok])
    assert load_jsonl(path, dev_fraction=0, test_fraction=0).train[0].question == longest_ok["question"]
    files = {f"{s}/P17.{s}.json": [_country(0)] for s in SPLITS}
    files["test/P17.test.json"] = [_country(0), _country(1, ["x", "A" * (MAX_ANSWER_CHARS + 1)])]
    n = MAX_ANSWER_CHARS + 1
    with pytest.raises(DataError, match=rf"P17\.test\.json: record 1: field 'answers' holds an answer {n} "
                                        rf"characters long, over the limit of {MAX_ANSWER_CHARS}"):
        load_entity_questions(_write_eq(tmp_path / "eq", files))


def test_jsonl_missing_file(tmp_path):
    with pytest.raises(DataError, match="JSONL file not found.*nope.jsonl"):
        load_jsonl(tmp_path / "nope.jsonl")


# --- Hydra configs and load_data -------------------------------------------------------------------------------


def _data_cfg(name: str, **overrides):
    root = OmegaConf.create({"seed": 0, "data": OmegaConf.load(REPO / "conf" / "data" / f"{name}.yaml")})
    for k, v in overrides.items():
        root.data[k] = v
    return root.data


def test_config_world_facts():
    data = load_data(_data_cfg("world_facts", num_train=30, num_dev=10, num_test=10))
    assert data.name == "world_facts" and len(data.train) == 30
    assert data.fingerprint() == load_data(_data_cfg("world_facts", num_train=30, num_dev=10,
                                                     num_test=10)).fingerprint()


@pytest.mark.parametrize("key, value", [("num_train", -5), ("num_dev", 0), ("num_test", 1.5), ("num_train", False),
                                        ("num_dev", None)])
def test_config_world_facts_bad_sizes_name_the_key(key, value):
    with pytest.raises(DataError, match=rf"data\.{key}={value!r}: expected an integer >= 1$"):
        load_data(_data_cfg("world_facts", **{key: value}))


def test_config_jsonl(tmp_path):
    path = _write_lines(tmp_path / "qs.jsonl", [{"question": f"Q{i}?", "answers": ["A"]} for i in range(10)])
    data = load_data(_data_cfg("jsonl", path=str(path)))
    assert data.name == "jsonl" and (len(data.train), len(data.dev), len(data.test)) == (8, 1, 1)


def test_config_entity_questions_on_fixture(eq_dir):
    data = load_data(_data_cfg("entity_questions", path=str(eq_dir), max_per_relation=2))
    assert data.name == "entity_questions" and len(data.train) == 4


@pytest.mark.skipif(not REAL_EQ.is_dir(), reason=f"EntityQuestions not present at {REAL_EQ}")
def test_config_entity_questions_default_path(monkeypatch, tmp_path):
    """The default path is relative (this file loaded alone, no paths node): found from any working directory."""
    monkeypatch.delenv("GL_ENTITY_QUESTIONS", raising=False)
    monkeypatch.chdir(tmp_path)
    data = load_data(_data_cfg("entity_questions", relations=["P36"], max_per_relation={"train": 5, "dev": 2,
                                                                                          "test": 2}))
    assert (len(data.train), len(data.dev), len(data.test)) == (5, 2, 2)


def test_load_data_surfaces_loader_errors_and_checks_result(tmp_path):
    with pytest.raises(DataError, match="JSONL file not found"):
        load_data(_data_cfg("jsonl", path=str(tmp_path / "missing.jsonl")))
    with pytest.raises(DataError, match="empty train split"):
        load_data({"_target_": "gradual_lightning.records.QASplits", "name": "empty"})
    with pytest.raises(DataError, match="returned str, expected QASplits"):
        load_data({"_target_": "gradual_lightning.records.fingerprint_records", "records": []})
    with pytest.raises(DataError, match="no '_target_'"):
        load_data({"name": "x"})
