"""Exact probabilities by teacher forcing (probe.method=score|hybrid): the math on hand-built logits, p_detect,
categories, validation, and agreement with decoding on a few real questions."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import pytest
import torch

from gradual_lightning.probing.cache import ProbeCache, probe_key
from gradual_lightning.probing.config import ProbeConfig
from gradual_lightning.probing.mastery import MasteryError, MasteryThresholds, categorize
from gradual_lightning.probing.matching import is_correct
from gradual_lightning.probing.runner import ProbeResult, recategorize, run_probe
from gradual_lightning.probing.scoring import (
    alias_paths,
    end_ids,
    greedy_matches_alias,
    p_detect,
    p_sample_equals_alias,
    score_prompts,
)
from gradual_lightning.records import QARecord
from gradual_lightning.validation import ConfigError

# ----------------------------------------------------------------------------------------------- a fake backend

VOCAB = ["<eos>", "\n", " \n", ".\n", "is\n", " Paris", " Lyon", " Rome", " New", " York", " Par", "is", " The",
         "x"]
ID = {t: i for i, t in enumerate(VOCAB)}
V = len(VOCAB)
OFF = -1e4  # a logit that no temperature brings back


class FakeTokenizer:
    """Longest-match tokenisation over VOCAB; id 0 is EOS (a special token)."""

    eos_token_id = 0
    pad_token_id = 0

    class _Enc:
        def __init__(self, ids):
            self.input_ids = ids

    def __call__(self, text, add_special_tokens=True):
        ids, i = [], 0
        while i < len(text):
            tok = max((t for t in VOCAB[1:] if text.startswith(t, i)), key=len)
            ids.append(ID[tok])
            i += len(tok)
        return self._Enc(ids)

    def __len__(self):
        return V

    def decode(self, ids, skip_special_tokens=False):
        return "".join(VOCAB[i] for i in ids if not (skip_special_tokens and i == 0))

    def batch_decode(self, rows):
        return [self.decode(r) for r in rows]


class FakeBackend:
    """A scripted LM: `lm[suffix][context]` = {token: logit} for the next token after `context` (a tuple of token
    strings); a missing context gives uniform logits. `greedy`/`sample` answers are scripted per suffix."""

    def __init__(self, lm, greedy_answers=None):
        self.tokenizer = FakeTokenizer()
        self.stop = "\n"
        self.stop_ids = [i for i, t in enumerate(VOCAB) if "\n" in t] + [0]  # as the engine: every "\n" token + EOS
        self.lm, self.greedy_answers = lm, greedy_answers or {}
        self.scored = Counter()

    def _row(self, suffix, context):
        spec = self.lm.get(suffix, {}).get(tuple(VOCAB[i] for i in context))
        if spec is None:
            return torch.zeros(V)
        row = torch.full((V,), OFF)
        for tok, logit in spec.items():
            row[ID[tok]] = logit
        return row

    def path_logits(self, prompts, paths, owner):
        out = []
        for path, o in zip(paths, owner):
            suffix = prompts[o][1]
            self.scored[suffix] += 1
            out.append(torch.stack([self._row(suffix, path[:i]) for i in range(len(path) + 1)]))
        return out

    def greedy(self, prompts):
        return [self.greedy_answers[s] for _, s in prompts]

    def sample(self, prompts, **kw):
        raise AssertionError("score and hybrid never sample")


def softmax(*logits):
    z = sum(math.exp(x) for x in logits)
    return [math.exp(x) / z for x in logits]


S = "Q: capital?\nA:"


def _backend(spec):
    return FakeBackend({S: spec})


# ----------------------------------------------------------------------------------------------- the math


def test_end_tokens_are_eos_and_stop_tokens_with_only_whitespace_before_the_stop():
    b = _backend({})
    # ".\n" and "is\n" stop decoding but change the answer ("Paris." / "Parisis"): they do not end it unchanged
    assert sorted(VOCAB[i] for i in end_ids(b)) == sorted(["<eos>", "\n", " \n"])


def test_greedy_hit_needs_every_argmax_on_the_path_and_an_end_after_it():
    root = {" Paris": 3.0, " Lyon": 2.0, " Par": 1.0}
    for after, hit in [({"\n": 2.0, "is": 1.0}, True), ({"<eos>": 1.0}, True), ({" \n": 1.0}, True),
                       ({"is": 2.0, "\n": 1.0}, False),   # "Parisis"
                       ({".\n": 2.0, "\n": 1.0}, False),  # "Paris.": right after normalisation, not counted
                       ({"is\n": 2.0}, False)]:
        b = _backend({(): root, (" Paris",): after})
        assert greedy_matches_alias(b, [("", S)], [["Paris"]]) == [hit], after
    b = _backend({(): {" Lyon": 3.0, " Paris": 2.0}, (" Paris",): {"\n": 1.0}, (" Lyon",): {"x": 1.0}})
    assert greedy_matches_alias(b, [("", S)], [["Paris"]]) == [False]
    assert greedy_matches_alias(b, [("", S)], [["Paris", "Lyon"]]) == [False]  # "Lyonx"
    b.lm[S][(" Lyon",)] = {"<eos>": 0.5}
    assert greedy_matches_alias(b, [("", S)], [["Paris", "Lyon"]]) == [True]
    assert score_prompts(b, [("", S)], [["Paris", "Lyon"]], temperature=1.0, top_k=0)[0].greedy_answer == "Lyon"


def test_sample_probability_is_the_tempered_top_k_renormalised_product():
    b = _backend({(): {" Paris": 2.0, " Lyon": 1.0, " Rome": 0.0},
                  (" Paris",): {"\n": 1.0, ".\n": 1.0, "is": 0.0}})
    for t in (1.0, 0.5, 2.0):
        # top-k 2: Rome is cut, Paris renormalised over {Paris, Lyon}; the end: "\n" against ".\n" ("is" is cut)
        expected = softmax(2 / t, 1 / t)[0] * softmax(1 / t, 1 / t)[0]
        assert p_sample_equals_alias(b, [("", S)], [["Paris"]], temperature=t, top_k=2) == [pytest.approx(expected)]
        # no top-k cut: Rome and "is" take their share
        expected = softmax(2 / t, 1 / t, 0)[0] * softmax(1 / t, 1 / t, 0)[0]
        assert p_sample_equals_alias(b, [("", S)], [["Paris"]], temperature=t, top_k=0) == [pytest.approx(expected)]
    # top-k 1 is greedy: 1 on the greedy path, 0 off it
    b.lm[S][(" Paris",)] = {"\n": 1.0, ".\n": 0.5}
    assert p_sample_equals_alias(b, [("", S)], [["Paris"]], temperature=0.5, top_k=1) == [pytest.approx(1.0)]
    assert p_sample_equals_alias(b, [("", S)], [["Lyon"]], temperature=0.5, top_k=1) == [0.0]
    b.lm[S][(" Paris",)] = {"\n": 0.5, ".\n": 1.0}
    assert p_sample_equals_alias(b, [("", S)], [["Paris"]], temperature=0.5, top_k=1) == [0.0]


def test_aliases_add_up_stop_tokens_add_up_and_duplicates_count_once():
    b = _backend({(): {" Paris": 1.0, " Lyon": 1.0, " New": 1.0, " Rome": 1.0},
                  (" Paris",): {"\n": 0.0, " \n": 0.0, "<eos>": 0.0, "x": 0.0},
                  (" Lyon",): {"\n": 0.0},
                  (" New",): {" York": 0.0, "\n": 0.0},
                  (" New", " York"): {"<eos>": 0.0}})
    p = lambda aliases: p_sample_equals_alias(b, [("", S)], [aliases], temperature=1.0, top_k=0)[0]  # noqa: E731
    assert p(["Paris"]) == pytest.approx(0.25 * 0.75)  # three of the four next tokens end the answer
    assert p(["Lyon"]) == pytest.approx(0.25)
    assert p(["New York"]) == pytest.approx(0.25 * 0.5 * 1.0)  # a two-token alias: the product along its path
    assert p(["Paris", "Lyon", "New York"]) == pytest.approx(0.25 * 0.75 + 0.25 + 0.125)
    assert p(["Paris", " Paris ", "Paris"]) == pytest.approx(0.25 * 0.75)


def test_several_prompts_in_one_call_keep_their_own_aliases():
    s2 = "Q: other?\nA:"
    b = FakeBackend({S: {(): {" Paris": 5.0}, (" Paris",): {"\n": 5.0}},
                     s2: {(): {" Rome": 5.0}, (" Rome",): {"<eos>": 5.0}}})
    out = score_prompts(b, [("", S), ("", s2), ("", S)], [["Paris"], ["Paris"], ["Rome"]], temperature=0.5, top_k=40)
    assert [o.greedy_hit for o in out] == [True, False, False]
    assert out[0].p_sample == pytest.approx(1.0) and out[1].p_sample < 1e-3


def test_max_new_tokens_caps_paths_as_decoding_does():
    b = _backend({(): {" New": 2.0, " Rome": 1.0}, (" New",): {" York": 1.0}, (" New", " York"): {"x": 1.0}})
    kw = dict(temperature=1.0, top_k=0)
    # no end after "New York": unbounded decoding runs on ("New Yorkx"), two-token decoding stops at "New York"
    assert greedy_matches_alias(b, [("", S)], [["New York"]]) == [False]
    assert greedy_matches_alias(b, [("", S)], [["New York"]], max_new_tokens=2) == [True]
    assert greedy_matches_alias(b, [("", S)], [["New York"]], max_new_tokens=1) == [False]
    assert p_sample_equals_alias(b, [("", S)], [["New York"]], **kw) == [pytest.approx(0.0)]
    assert p_sample_equals_alias(b, [("", S)], [["New York"]], max_new_tokens=2, **kw) == [
        pytest.approx(softmax(2.0, 1.0)[0])]
    assert p_sample_equals_alias(b, [("", S)], [["New York"]], max_new_tokens=1, **kw) == [0.0]


def test_aliases_that_no_decoded_answer_can_match_are_not_scored():
    tok = FakeTokenizer()
    paths, owner, texts = alias_paths(tok, [["The", "Paris", "New\nYork"], ["  "], ["Rome"]])
    assert texts == ["Paris", "Rome"] and owner == [0, 2]
    assert paths == [[ID[" Paris"]], [ID[" Rome"]]]


def test_scored_distribution_is_the_one_the_sampler_draws_from():
    from gradual_lightning.probing.tokens import sample_token, truncated_probs

    logits = torch.tensor([2.0, 1.5, 0.3, -1.0, 0.9, 1.4])
    for t, k in [(0.5, 3), (1.0, 6), (2.0, 2)]:
        draws = sample_token(logits.expand(40000, -1), temperature=t, top_k=k,
                             generator=torch.Generator().manual_seed(0))
        freq = torch.bincount(draws, minlength=6).float() / 40000
        assert torch.allclose(freq, truncated_probs(logits, temperature=t, top_k=k), atol=0.01), (t, k)


def test_p_detect_is_the_chance_that_some_sample_is_right():
    assert p_detect([0.1, 0.2], 16) == pytest.approx(1 - 0.9 ** 16 * 0.8 ** 16)
    assert p_detect([0.0] * 10, 16) == 0.0 and math.copysign(1, p_detect([0.0], 16)) == 1  # no "-0.0" in rows
    assert p_detect([0.0, 1.0], 16) == 1.0
    assert p_detect([0.3], 1) == pytest.approx(0.3)
    assert p_detect([1e-12] * 10, 16) == pytest.approx(160e-12, rel=1e-6)  # no cancellation for tiny p
    assert p_detect([0.05] * 10, 0) == 0.0


# ----------------------------------------------------------------------------------------------- categories


def test_categorize_with_p_detect():
    slick = MasteryThresholds()
    assert slick.weakly_known_detect == 0.5
    assert categorize(0.0, 0.01, slick, p_detect=0.6) == "WeaklyKnown"
    assert categorize(0.0, 0.01, slick, p_detect=0.5) == "WeaklyKnown"
    assert categorize(0.0, 0.001, slick, p_detect=0.2) == "Unknown"  # generate would call any p_sampled > 0 Weakly
    assert categorize(0.0, 0.001, slick) == "WeaklyKnown"
    assert categorize(0.0, 0.001, MasteryThresholds(weakly_known_detect=0.1), p_detect=0.2) == "WeaklyKnown"
    assert categorize(0.0, 0.0, MasteryThresholds(weakly_known_detect=0.0), p_detect=0.0) == "Unknown"
    assert categorize(0.5, 0.0, slick, p_detect=0.0) == "MaybeKnown" and categorize(1.0, None, slick) == "HighlyKnown"
    strict = MasteryThresholds(maybe_known=0.1, weakly_known=0.01)  # weakly_known still bounds the expected share
    assert categorize(0.0, 0.005, strict, p_detect=0.9) == "Unknown"
    assert categorize(0.0, 0.05, strict, p_detect=0.9) == "WeaklyKnown"


@pytest.mark.parametrize("value", [1.5, -0.1, True, "x", None])
def test_bad_weakly_known_detect_is_rejected_naming_the_key(value):
    with pytest.raises(MasteryError, match="mastery.weakly_known_detect"):
        MasteryThresholds(weakly_known_detect=value)


def test_weakly_known_detect_in_config():
    assert MasteryThresholds.from_config({"name": "x", "weakly_known_detect": 0.9}).weakly_known_detect == 0.9
    assert MasteryThresholds.from_config({"name": "old"}).weakly_known_detect == 0.5  # presets written before it


# ----------------------------------------------------------------------------------------------- config


def test_method_is_validated_and_exact_match_only():
    assert ProbeConfig().method == "generate"
    for m in ("generate", "score", "hybrid"):
        assert ProbeConfig(method=m).method == m
    ProbeConfig(method="generate", match="contains")
    with pytest.raises(ConfigError, match="probe.method='sample' is not one of"):
        ProbeConfig(method="sample")
    with pytest.raises(ConfigError, match="probe.method=.*expected a string"):
        ProbeConfig.from_config({"method": 1})
    for m in ("score", "hybrid"):
        with pytest.raises(ConfigError, match=f"probe.method='{m}' scores exact answers only.*probe.match='contains'"):
            ProbeConfig.from_config({"method": m, "match": "contains"})
    with pytest.raises(ConfigError, match="reprobe.method='score'.*reprobe.match='contains'"):
        ProbeConfig.from_config({"match": "contains"}, "reprobe", base=ProbeConfig(method="score"))


def test_method_is_in_the_cache_key_and_generate_keys_are_unchanged():
    key = ProbeConfig().cache_key()
    assert "method" not in key  # generate: entries cached before the field existed still hold
    keys = {probe_key("m", QUESTIONS, DEV, ProbeConfig(method=m)) for m in ("generate", "score", "hybrid")}
    assert len(keys) == 3


# ----------------------------------------------------------------------------------------------- run_probe


def _q(i, kind, split="train"):
    return QARecord(id=f"{kind}-{split}-{i}", relation="r", question=f"{kind} {split} {i}?", answers=("Paris",),
                    split=split)


QUESTIONS = [_q(0, "known"), _q(0, "weak"), _q(0, "rare")]
DEV = [_q(i, "dev", "dev") for i in range(4)]
CFG = ProbeConfig(num_prompts=2, k_shot=1, num_samples=16, temperature=1.0, seed=0, method="score")


def _run_backend():
    """known: Paris, always. weak: Paris with p 0.05 per sample (greedy: Lyon). rare: p 0.001. The fake ignores the
    prefix: both prompts of a question give the same."""
    def spec(p):
        lp = math.log(p / (1 - p))
        return {(): {" Paris": lp, " Lyon": 0.0}, (" Paris",): {"\n": 0.0}}
    lm = {"Q: known train 0?\nA:": {(): {" Paris": 0.0}, (" Paris",): {"\n": 0.0}},
          "Q: weak train 0?\nA:": spec(0.05), "Q: rare train 0?\nA:": spec(0.001)}
    greedy = {"Q: known train 0?\nA:": "Paris", "Q: weak train 0?\nA:": "Lyon", "Q: rare train 0?\nA:": "Lyon"}
    return FakeBackend(lm, greedy)


def test_score_method_end_to_end_on_a_fake_backend():
    b = _run_backend()
    results = {r.id: r for r in run_probe(b, QUESTIONS, DEV, CFG, progress=False)}
    known, weak, rare = results["known-train-0"], results["weak-train-0"], results["rare-train-0"]
    assert known.p_greedy == 1.0 and known.greedy == ["Paris", "Paris"] and known.category == "HighlyKnown"
    assert weak.greedy == [None, None] and weak.samples == [] and weak.method == "score"
    assert weak.p_sampled == pytest.approx(0.05) and weak.p_detect == pytest.approx(1 - 0.95 ** 32)
    assert weak.category == "WeaklyKnown"
    assert rare.p_sampled == pytest.approx(0.001) and rare.category == "Unknown"  # p_detect = 0.031
    assert known.p_sampled == pytest.approx(1.0)  # score computes the probabilities of every question
    assert all(b.scored[s] == 2 for s in b.lm)  # one path (one alias) per prompt, two prompts
    lenient = recategorize(list(results.values()), MasteryThresholds(weakly_known_detect=0.01))
    assert {r.id: r.category for r in lenient}["rare-train-0"] == "WeaklyKnown"


def test_score_without_samples_is_greedy_only():
    cfg = ProbeConfig(**{**CFG.__dict__, "num_samples": 0})
    for r in run_probe(_run_backend(), QUESTIONS, DEV, cfg, progress=False):
        assert r.p_sampled is None and r.p_detect is None
        assert r.category == ("HighlyKnown" if r.id.startswith("known") else "Unknown")


def test_hybrid_decodes_greedy_and_scores_only_what_sampling_would():
    b = _run_backend()
    cfg = ProbeConfig(**{**CFG.__dict__, "method": "hybrid"})
    results = {r.id: r for r in run_probe(b, QUESTIONS, DEV, cfg, progress=False)}
    generated = {r.id: r for r in run_probe(_run_backend(), QUESTIONS, DEV,
                                           ProbeConfig(**{**cfg.__dict__, "method": "generate", "num_samples": 0}),
                                           progress=False)}
    for qid, r in results.items():
        assert r.greedy == generated[qid].greedy and r.p_greedy == generated[qid].p_greedy and r.method == "hybrid"
    assert results["weak-train-0"].greedy == ["Lyon", "Lyon"]  # wrong answers are recorded
    assert results["weak-train-0"].category == "WeaklyKnown" and results["rare-train-0"].category == "Unknown"
    assert results["known-train-0"].p_sampled is None  # adaptive: p_greedy > 0 needs no sampling
    assert set(b.scored) == {"Q: weak train 0?\nA:", "Q: rare train 0?\nA:"}


def test_rows_round_trip_and_old_rows_still_load(tmp_path):
    results = run_probe(_run_backend(), QUESTIONS, DEV, CFG, progress=False)
    cache = ProbeCache(tmp_path)
    key = probe_key("m", QUESTIONS, DEV, CFG)
    cache.save(key, results)
    again = cache.load(key, MasteryThresholds())
    assert [r.to_dict() for r in again] == [r.to_dict() for r in results]
    # the detection threshold is not in the key: another value re-derives the categories from the stored values
    loose = cache.load(key, MasteryThresholds(weakly_known_detect=0.01))
    assert {r.id: r.category for r in loose}["rare-train-0"] == "WeaklyKnown"
    old = {k: v for k, v in results[1].to_dict().items() if k not in ("p_detect", "method")}
    row = ProbeResult(**old)
    assert row.method == "generate" and row.p_detect is None
    assert recategorize([row], MasteryThresholds())[0].category == "WeaklyKnown"  # p_sampled > 0, as generate


# ----------------------------------------------------------------------------------------------- a real model

# SmolLM2-135M (2 prompts, seed 0) gets the first two right, the others wrong; Kazakhstan is WeaklyKnown
CAPITALS = [("France", ["Paris"]), ("Peru", ["Lima"]), ("Burkina Faso", ["Ouagadougou"]), ("Australia", ["Canberra"]),
            ("Kazakhstan", ["Astana", "Nur-Sultan"])]


def _capital_records():
    qs = [QARecord(id=f"cap-{c}", relation="capital", question=f"What is the capital of {c}?", answers=tuple(a))
          for c, a in CAPITALS]
    dev = [QARecord(id=f"dev-{c}", relation="capital", question=f"What is the capital of {c}?", answers=(a,),
                    split="dev")
           for c, a in [("Spain", "Madrid"), ("Egypt", "Cairo"), ("Canada", "Ottawa"), ("Kenya", "Nairobi")]]
    return qs, dev


def test_exact_methods_agree_with_generation_on_the_real_model(smollm2):
    from gradual_lightning.probing.backend import make_backend

    qs, dev = _capital_records()
    base = dict(num_prompts=2, k_shot=2, num_samples=16, max_new_tokens=8, batch_size=8, seed=0)
    backend = make_backend("engine", smollm2.model, smollm2.tokenizer, max_new_tokens=8, batch_size=8)
    run = lambda **kw: {r.id: r for r in run_probe(backend, qs, dev, ProbeConfig(**{**base, **kw}),  # noqa: E731
                                                   tokenizer=smollm2.tokenizer, progress=False)}
    generated = run(method="generate", num_samples=0)
    hybrid, scored = run(method="hybrid"), run(method="score")
    exact_hits = misses = 0
    for q in qs:
        g, h, s = generated[q.id], hybrid[q.id], scored[q.id]
        assert h.greedy == g.greedy and h.p_greedy == g.p_greedy
        for answer, scored_answer in zip(g.greedy, s.greedy):
            if answer in q.answers:  # the greedy answer is an alias exactly: scoring must find it
                assert scored_answer == answer, (q.id, answer)
                exact_hits += 1
            elif not is_correct(answer, q.answers, "exact"):  # a wrong answer is never a scored hit
                assert scored_answer is None, (q.id, answer)
                misses += 1
        assert 0.0 <= s.p_detect <= 1.0 and 0.0 <= s.p_sampled <= 1.0
        if h.p_sampled is not None:  # the same probabilities, whichever way greedy was found
            assert h.p_sampled == pytest.approx(s.p_sampled, abs=1e-5)
    assert exact_hits > 0 and misses > 0, (exact_hits, misses)  # both cases were checked


def test_dev_accuracy_by_scoring_equals_dev_accuracy_by_decoding_on_the_real_model(smollm2):
    """eval.method=score checks dev answers by teacher forcing; under exact match the verdicts are the ones decoding
    (eval.method=generate, the default) gives, question by question (prober.accuracy_config)."""
    from gradual_lightning.probing.mastery import SLICK
    from gradual_lightning.probing.prober import Prober
    from gradual_lightning.records import QASplits

    qs, dev = _capital_records()
    data = QASplits(dev=[dataclasses.replace(q, split="dev") for q in qs] + dev)
    verdicts = {}
    for method in ("generate", "score"):
        cfg = ProbeConfig(num_prompts=2, k_shot=2, num_samples=0, max_new_tokens=8, batch_size=8, method=method)
        prober = Prober(data, smollm2.tokenizer, cfg, cfg, cfg, SLICK, progress=False)
        verdicts[method] = prober.dev_accuracy(smollm2.model)
    assert verdicts["score"] == verdicts["generate"]
    assert len(verdicts["score"]) == len(data.dev)
    assert 0 < sum(verdicts["score"].values()) < len(data.dev)  # right and wrong answers were both compared


def test_a_bfloat16_probe_of_a_float32_model_gives_nearly_the_same_answers(smollm2):
    """probe.dtype=bfloat16 probes a bf16 copy (backend.probe_model): the model stays float32, and the copy's greedy
    answers are the model's up to near-tied logits."""
    from gradual_lightning.probing.mastery import SLICK
    from gradual_lightning.probing.prober import probe_questions

    qs, dev = _capital_records()
    cfg = ProbeConfig(num_prompts=2, k_shot=2, num_samples=0, max_new_tokens=8, batch_size=8)
    answers = {}
    for dtype in (None, "bfloat16"):
        results, _ = probe_questions(smollm2.model, smollm2.tokenizer, qs, dev, dataclasses.replace(cfg, dtype=dtype),
                                     SLICK, progress=False)
        answers[dtype] = [a for r in results for a in r.greedy]
    assert {p.dtype for p in smollm2.model.parameters()} == {torch.float32}
    assert len(answers["bfloat16"]) == len(answers[None]) == 2 * len(qs)
    assert sum(a == b for a, b in zip(answers[None], answers["bfloat16"])) >= 0.8 * len(answers[None]), answers
