"""Runner logic (adaptive sampling, early stop, categories, cache) with a scripted engine whose answers we control.

The engine's own correctness against HF generate is tested in test_engine.py with the real model.
"""

from collections import Counter

import pytest

from gradual_lightning.probing.cache import ProbeCache, probe_key
from gradual_lightning.probing.config import ProbeConfig
from gradual_lightning.probing.mastery import MasteryThresholds
from gradual_lightning.probing.runner import run_probe
from gradual_lightning.records import QARecord

BEHAVIOUR = {"always": "HighlyKnown", "alternate": "MaybeKnown", "lucky": "WeaklyKnown", "never": "Unknown"}


def _q(i, kind, split="train"):
    return QARecord(id=f"{kind}-{split}-{i}", relation="r", question=f"{kind} {split} {i}?", answers=(f"gold {i}",),
                    split=split)


class ScriptedEngine:
    """Greedy: 'always' right, 'alternate' right on every other prompt, others wrong.
    Sampling: 'lucky' questions get exactly one right sample per prompt, others none."""

    def __init__(self, questions):
        self.by_suffix = {f"Q: {q.question}\nA:": q for q in questions}
        self.greedy_calls = Counter()
        self.sampled = Counter()
        self.calls = []  # the prefixes of each greedy call

    def greedy(self, prompts):
        self.calls.append([p for p, _ in prompts])
        out = []
        for _, s in prompts:
            q = self.by_suffix[s]
            kind = q.id.split("-")[0]
            self.greedy_calls[q.id] += 1
            right = kind == "always" or (kind == "alternate" and self.greedy_calls[q.id] % 2 == 1)
            out.append(q.answer if right else "wrong")
        return out

    def sample(self, prompts, *, num_samples, temperature, top_k, generator):
        out = []
        for _, s in prompts:
            q = self.by_suffix[s]
            self.sampled[q.id] += 1
            lucky = q.id.startswith("lucky")
            out.append([q.answer if (lucky and i == 0) else "nope" for i in range(num_samples)])
        return out


QUESTIONS = [_q(i, kind) for kind in BEHAVIOUR for i in range(3)]
DEV = [_q(i, "always", "dev") for i in range(6)]
CFG = ProbeConfig(num_prompts=4, k_shot=2, num_samples=8, seed=0)


def test_categories_and_probabilities():
    results = run_probe(ScriptedEngine(QUESTIONS), QUESTIONS, DEV, CFG, progress=False)
    assert [r.id for r in results] == [q.id for q in QUESTIONS]
    for r in results:
        kind = r.id.split("-")[0]
        assert r.category == BEHAVIOUR[kind], r
        assert len(r.greedy) == 4 and len(r.exemplars) == 4
    lucky = next(r for r in results if r.id.startswith("lucky"))
    assert lucky.p_greedy == 0 and lucky.p_sampled == pytest.approx(1 / 8) and len(lucky.samples) == 32
    alternate = next(r for r in results if r.id.startswith("alternate"))
    assert alternate.p_greedy == 0.5


def test_greedy_calls_batch_across_exemplar_sets_grouped_by_prefix():
    engine = ScriptedEngine(QUESTIONS)
    results = run_probe(engine, QUESTIONS, DEV, CFG, progress=False)
    (prefixes,) = engine.calls  # 12 questions x 4 exemplar sets: one call (chunk = 4 * batch_size = 128)
    assert len(prefixes) == 48 and len(set(prefixes)) == 4
    assert sum(a != b for a, b in zip(prefixes, prefixes[1:])) == 3  # each exemplar set's prompts together
    small = ScriptedEngine(QUESTIONS)
    again = run_probe(small, QUESTIONS, DEV, ProbeConfig(**{**CFG.__dict__, "batch_size": 5}), progress=False)
    assert [len(c) for c in small.calls] == [20, 20, 8]  # chunks of 20 prompts, cut regardless of the prefix
    assert [len(set(c)) for c in small.calls] == [2, 3, 1]  # 12 + 8 | 4 + 12 + 4 | 8
    assert [r.to_dict() for r in again] == [r.to_dict() for r in results]


def test_adaptive_sampling_samples_only_questions_with_greedy_score_zero():
    engine = ScriptedEngine(QUESTIONS)
    results = run_probe(engine, QUESTIONS, DEV, CFG, progress=False)
    sampled = set(engine.sampled)
    assert sampled == {r.id for r in results if r.p_greedy == 0}
    assert all(r.p_sampled is None and r.samples == [] for r in results if r.p_greedy > 0)


def test_without_adaptive_sampling_every_question_is_sampled():
    engine = ScriptedEngine(QUESTIONS)
    run_probe(engine, QUESTIONS, DEV, ProbeConfig(**{**CFG.__dict__, "adaptive_sampling": False}), progress=False)
    assert set(engine.sampled) == {q.id for q in QUESTIONS}


def test_early_stop_ends_sampling_at_first_correct_sample_and_flags_lower_bound():
    engine = ScriptedEngine(QUESTIONS)
    cfg = ProbeConfig(**{**CFG.__dict__, "early_stop_sampling": True})
    results = {r.id: r for r in run_probe(engine, QUESTIONS, DEV, cfg, progress=False)}
    lucky, never = "lucky-train-0", "never-train-0"
    assert engine.sampled[lucky] == 1 and engine.sampled[never] == 4
    assert results[lucky].p_sampled_is_lower_bound and not results[never].p_sampled_is_lower_bound
    assert results[lucky].category == "WeaklyKnown"


def test_greedy_only_probe_leaves_weakly_known_empty():
    cfg = ProbeConfig(**{**CFG.__dict__, "num_samples": 0})
    results = run_probe(ScriptedEngine(QUESTIONS), QUESTIONS, DEV, cfg, progress=False)
    assert Counter(r.category for r in results) == {"HighlyKnown": 3, "MaybeKnown": 3, "Unknown": 6}


def test_cache_round_trip_and_recategorizes_with_new_thresholds(tmp_path):
    results = run_probe(ScriptedEngine(QUESTIONS), QUESTIONS, DEV, CFG, progress=False)
    cache = ProbeCache(tmp_path)
    key = probe_key("model-a", QUESTIONS, DEV, CFG)
    assert cache.load(key, MasteryThresholds()) is None
    cache.save(key, results)
    again = cache.load(key, MasteryThresholds())
    assert [r.to_dict() for r in again] == [r.to_dict() for r in results]
    lenient = cache.load(key, MasteryThresholds(name="lenient", highly_known=0.5))
    assert Counter(r.category for r in lenient)["HighlyKnown"] == 6  # 'alternate' (p=0.5) is now HighlyKnown
    # anything that changes what a probe finds changes the key; batch size does not
    assert probe_key("model-b", QUESTIONS, DEV, CFG) != key
    assert probe_key("model-a", QUESTIONS[:-1], DEV, CFG) != key
    assert probe_key("model-a", QUESTIONS, DEV, ProbeConfig(**{**CFG.__dict__, "num_prompts": 5})) != key
    assert probe_key("model-a", QUESTIONS, DEV, ProbeConfig(**{**CFG.__dict__, "batch_size": 7})) == key


def test_damaged_cache_entry_is_recomputed_not_trusted(tmp_path):
    cache = ProbeCache(tmp_path)
    cache.path("k").write_text('{"id": "x"\n')
    assert cache.load("k", MasteryThresholds()) is None


def test_unwritable_or_unreadable_cache_entry_warns_and_keeps_the_results(tmp_path, caplog):
    results = run_probe(ScriptedEngine(QUESTIONS), QUESTIONS, DEV, CFG, progress=False)
    cache = ProbeCache(tmp_path)
    cache.path("k").mkdir()  # a directory where the entry file goes: fails as root too, unlike chmod
    with caplog.at_level("WARNING", logger="gradual_lightning.probing.cache"):
        assert cache.save("k", results) is None
        assert cache.load("k", MasteryThresholds()) is None
    # one warning for the write and one for the read, each naming the entry's path
    assert [(r.levelname, str(cache.path("k")) in r.getMessage()) for r in caplog.records] == [("WARNING", True)] * 2
    assert cache.path("k").is_dir()  # left as it was
    assert list(tmp_path.iterdir()) == [cache.path("k")]  # no temp file left behind
    (tmp_path / "file").write_text("")
    under_a_file = ProbeCache(tmp_path / "file" / "cache")
    assert under_a_file.save("k", results) is None and under_a_file.load("k", MasteryThresholds()) is None


def test_probe_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="probe: unknown key\\(s\\) \\['num_promts'\\]"):
        ProbeConfig.from_config({"num_promts": 3})
    with pytest.raises(ValueError, match="probe.match='regex'"):
        ProbeConfig(match="regex")
    with pytest.raises(ValueError, match="temperature=0"):
        ProbeConfig(temperature=0)
    with pytest.raises(ValueError, match="probe.dtype='int8' is not one of \\(None, 'float32'"):
        ProbeConfig(dtype="int8")


def test_probe_dtype_enters_the_cache_key_only_when_set():
    assert "dtype" not in ProbeConfig().cache_key()  # keys (and cache entries) from before the field still hold
    assert ProbeConfig(dtype="bfloat16").cache_key()["dtype"] == "bfloat16"
