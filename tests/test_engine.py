"""GenerationEngine: prefix-cached greedy/sampled answers equal plain HF generate; batching, seeding, stopping."""

from __future__ import annotations

import copy

import pytest
import torch

from gradual_lightning.probing.batching import common_prefix_len, length_buckets, plan_groups, suffix_batch_inputs
from gradual_lightning.probing.engine import GenerationEngine
from gradual_lightning.probing.hf import naive_generate
from gradual_lightning.probing.tokens import encode_prompt, sample_token

CAPITALS = ("Q: What is the capital of France?\nA: Paris\nQ: What is the capital of Japan?\nA: Tokyo\n"
            "Q: What is the capital of Italy?\nA: Rome\nQ: What is the capital of Egypt?\nA: Cairo\n")
CONTINENTS = ("Q: On which continent is Brazil?\nA: South America\nQ: On which continent is Kenya?\nA: Africa\n"
              "Q: On which continent is Norway?\nA: Europe\nQ: On which continent is Vietnam?\nA: Asia\n")
CITIES = ("Q: In which country is the city of Lyon?\nA: France\n"
          "Q: In which country is the city of Osaka?\nA: Japan\n"
          "Q: In which country is the city of Porto?\nA: Portugal\n"
          "Q: In which country is the city of Cork?\nA: Ireland\n")
COUNTRIES = ["Germany", "Spain", "Peru", "the Democratic Republic of the Congo", "Kenya", "Saint Vincent and the "
             "Grenadines", "Chad"]
SETS = [
    (CAPITALS, [f"Q: What is the capital of {c}?\nA:" for c in COUNTRIES]),
    (CONTINENTS, [f"Q: On which continent is {c}?\nA:" for c in COUNTRIES[:6]]),
    (CITIES, [f"Q: In which country is the city of {c}?\nA:" for c in
              ["Munich", "Marseille", "Kyoto", "Rio de Janeiro", "Llanfairpwllgwyngyll", "Graz"]]),
]


# ----------------------------------------------------------------------------------------------- pure helpers


def test_suffix_batch_inputs_left_pads_between_prefix_and_suffix():
    ids, mask, pos = suffix_batch_inputs([[5, 6, 7], [8]], prefix_len=2, pad_id=0, extra=2)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 1, 1, 1]]
    assert pos.tolist() == [[2, 3, 4], [1, 1, 2]]  # a pad repeats the last prefix position; it is never attended


def test_length_buckets_group_neighbours():
    batches = length_buckets([5, 1, 4, 2, 3], 2)
    assert batches == [[1, 3], [4, 2], [0]]


def test_common_prefix_and_group_plan():
    assert common_prefix_len([[1, 2, 3], [1, 2, 4, 5], [1, 2]]) == 2
    assert common_prefix_len([[7], [8]]) == 0
    assert plan_groups([5] * 27 + [6] * 4 + [9], overhead=24) == [(0, 27), (27, 32)]
    assert plan_groups([5, 5, 6], overhead=100) == [(0, 3)]
    assert plan_groups([1, 9], overhead=0) == [(0, 1), (1, 2)]


def test_sample_token_stays_in_top_k():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]]).repeat(200, 1)
    drawn = sample_token(logits, temperature=1.0, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {1, 2}


# ----------------------------------------------------------------------------------------------- real model


@pytest.fixture(scope="module")
def smol_answers(smollm2):
    """Engine (batches of 4: several buckets, mixed lengths) vs HF generate one prompt per call, same token ids."""
    engine = GenerationEngine(smollm2.model, smollm2.tokenizer, max_new_tokens=5, batch_size=4)
    got, ref = [], []
    for prefix, suffixes in SETS:
        got += engine.greedy(prefix, suffixes)
        ref += naive_generate(smollm2.model, smollm2.tokenizer, [(prefix, s) for s in suffixes], max_new_tokens=5)
    return got, ref


def test_greedy_identical_to_naive_generate_fp32(smol_answers):
    got, ref = smol_answers
    assert len(got) == 19
    assert got == ref
    assert sum(a in ("Berlin", "Madrid", "Lima", "Nairobi") for a in got) >= 3  # the model does answer


def test_mixed_length_batch_equals_batch_size_one(smollm2, smol_answers):
    engine = GenerationEngine(smollm2.model, smollm2.tokenizer, max_new_tokens=5, batch_size=1)
    prefix, suffixes = SETS[0]
    lengths = {len(encode_prompt(smollm2.tokenizer, prefix, s)) for s in suffixes}
    assert len(lengths) >= 3  # the batch really mixes lengths
    assert engine.greedy(prefix, suffixes) == smol_answers[0][: len(suffixes)]


@pytest.mark.parametrize("kw", [dict(share_suffix_prefix=False, group_overhead_tokens=-1),
                                dict(group_overhead_tokens=0)], ids=["plain_prefix_cache", "grouped_prefill"])
def test_prefill_variants_agree(smollm2, smol_answers, kw):
    """Without sharing the question template / with prefill split in length groups: same answers."""
    engine = GenerationEngine(smollm2.model, smollm2.tokenizer, max_new_tokens=5, batch_size=8, **kw)
    prefix, suffixes = SETS[0]
    assert engine.greedy(prefix, suffixes) == smol_answers[0][: len(suffixes)]


def test_engine_reused_across_calls_and_templates(smollm2, smol_answers):
    """Same prefix, another question template (extends the memoised prefix K/V), then a 2-suffix call (no sharing)."""
    engine = GenerationEngine(smollm2.model, smollm2.tokenizer, max_new_tokens=5, batch_size=8)
    prefix, suffixes = SETS[0]
    assert engine.greedy(prefix, suffixes) == smol_answers[0][: len(suffixes)]
    other = SETS[1][1]
    fresh = GenerationEngine(smollm2.model, smollm2.tokenizer, max_new_tokens=5, batch_size=8,
                             share_suffix_prefix=False)
    assert engine.greedy(prefix, other) == fresh.greedy(prefix, other)
    assert engine.greedy(prefix, suffixes[:2]) == smol_answers[0][:2]


def test_no_stop_string_in_outputs(smollm2, smol_answers):
    assert all("\n" not in a for a in smol_answers[0])
    engine = GenerationEngine(smollm2.model, smollm2.tokenizer, max_new_tokens=6, batch_size=8)
    samples = engine.sample(CAPITALS, SETS[0][1][:2], num_samples=4, temperature=1.0, top_k=40,
                            generator=torch.Generator().manual_seed(0))
    assert all("\n" not in a for row in samples for a in row)


# ----------------------------------------------------------------------------------------------- tiny_random model


def _sample(lm, seed, n=5, **kw):
    engine = GenerationEngine(lm.model, lm.tokenizer, max_new_tokens=4, batch_size=2, **kw)
    return engine.sample(CAPITALS, SETS[0][1][:3], num_samples=n, temperature=0.9, top_k=40,
                         generator=torch.Generator().manual_seed(seed))


def test_sampling_reproducible_and_counted(tiny_random):
    a, b, c = _sample(tiny_random, 1), _sample(tiny_random, 1), _sample(tiny_random, 2)
    assert a == b
    assert a != c
    assert [len(x) for x in a] == [5, 5, 5]
    assert all("\n" not in s for row in a for s in row)


def test_sampling_batch_rows_do_not_change_counts(tiny_random):
    out = _sample(tiny_random, 3, n=4, sample_batch_rows=4)  # one prompt per batch
    assert [len(x) for x in out] == [4, 4, 4]


def test_top_k_one_sampling_equals_greedy(tiny_random):
    engine = GenerationEngine(tiny_random.model, tiny_random.tokenizer, max_new_tokens=4, batch_size=3)
    suffixes = SETS[0][1][:4]
    greedy = engine.greedy(CAPITALS, suffixes)
    sampled = engine.sample(CAPITALS, suffixes, num_samples=3, temperature=0.7, top_k=1,
                            generator=torch.Generator().manual_seed(0))
    assert sampled == [[g] * 3 for g in greedy]


def test_tiny_greedy_batched_equals_naive(tiny_random):
    prefix, suffixes = SETS[2]
    engine = GenerationEngine(tiny_random.model, tiny_random.tokenizer, max_new_tokens=4, batch_size=4)
    ref = naive_generate(tiny_random.model, tiny_random.tokenizer, [(prefix, s) for s in suffixes], max_new_tokens=4)
    assert engine.greedy(prefix, suffixes) == ref
    assert naive_generate(tiny_random.model, tiny_random.tokenizer, [(prefix, s) for s in suffixes], max_new_tokens=4,
                          batch_size=4) == ref


def test_stop_at_first_is_consulted_and_keeps_counts_bounded(smollm2):
    seen = []

    def decided(i, answer):
        seen.append((i, answer))
        return True

    engine = GenerationEngine(smollm2.model, smollm2.tokenizer, max_new_tokens=6, batch_size=8)
    out = engine.sample(CAPITALS, SETS[0][1][:3], num_samples=6, temperature=1.0, top_k=40,
                        generator=torch.Generator().manual_seed(1), stop_at_first=decided)
    assert all(1 <= len(row) <= 6 for row in out)
    assert {i for i, _ in seen} == {0, 1, 2}
    assert all(answer in out[i] for i, answer in seen)


def test_peft_wrapped_model_gives_same_answers(tiny_random):
    from peft import LoraConfig, get_peft_model

    tiny = tiny_random
    base = GenerationEngine(tiny.model, tiny.tokenizer, max_new_tokens=3, batch_size=4).greedy(CAPITALS, SETS[0][1])
    peft_model = get_peft_model(copy.deepcopy(tiny.model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    engine = GenerationEngine(peft_model, tiny.tokenizer, max_new_tokens=3, batch_size=4)
    assert engine.greedy(CAPITALS, SETS[0][1]) == base  # fresh LoRA (B = 0) is a no-op


def test_bfloat16_model_runs(tiny_random):
    engine = GenerationEngine(copy.deepcopy(tiny_random.model).to(torch.bfloat16), tiny_random.tokenizer,
                              max_new_tokens=3, batch_size=4)
    assert len(engine.greedy(CAPITALS, SETS[0][1][:4])) == 4
    out = engine.sample(CAPITALS, SETS[0][1][:2], num_samples=3, temperature=0.5, top_k=40,
                        generator=torch.Generator().manual_seed(0))
    assert [len(x) for x in out] == [3, 3]


# ----------------------------------------------------------------------------------------------- score method


def test_scoring_agrees_with_decoding(smollm2):
    from gradual_lightning.probing.scoring import greedy_matches_alias, p_sample_equals_alias

    prefix, suffixes = SETS[0]
    engine = GenerationEngine(smollm2.model, smollm2.tokenizer, max_new_tokens=12, batch_size=16)
    greedy = engine.greedy(prefix, suffixes)  # long enough for every answer to end (scoring has no length cap)
    aliases = [[g, "Zzyzx Qq"] for g in greedy]
    assert greedy_matches_alias(engine, prefix, suffixes, aliases) == [True] * len(suffixes)
    assert greedy_matches_alias(engine, prefix, suffixes, [["Zzyzx Qq"]] * len(suffixes)) == [False] * len(suffixes)
    p_top1 = p_sample_equals_alias(engine, prefix, suffixes, aliases, temperature=0.5, top_k=1)
    assert p_top1 == pytest.approx([1.0] * len(suffixes))
    p = p_sample_equals_alias(engine, prefix, suffixes, aliases, temperature=0.5, top_k=40)
    assert all(0.0 < x <= 1.0 + 1e-6 for x in p)


# ----------------------------------------------------------------------------------------------- backends


def test_both_backends_satisfy_the_protocol_and_agree(tiny_random):
    from gradual_lightning.probing.backend import ProbeBackend, make_backend

    prefix, suffixes = SETS[0][0], SETS[0][1][:4]
    engine, hf = (make_backend(name, tiny_random.model, tiny_random.tokenizer, max_new_tokens=4, batch_size=4)
                  for name in ("engine", "hf"))
    assert isinstance(engine, ProbeBackend) and isinstance(hf, ProbeBackend)
    assert hf.greedy(prefix, suffixes) == engine.greedy(prefix, suffixes)
    paths, owner = [[100, 200], [300], [5, 6, 7]], [0, 1, 3]
    for a, b in zip(engine.path_logits(prefix, suffixes, paths, owner), hf.path_logits(prefix, suffixes, paths, owner)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="probe.backend='vllm' is not one of"):
        make_backend("vllm", tiny_random.model, tiny_random.tokenizer, max_new_tokens=4, batch_size=4)


def test_hf_backend_sampling_is_seeded_and_leaves_the_global_rng_alone(tiny_random):
    from gradual_lightning.probing.hf import HFGenerateBackend

    backend = HFGenerateBackend(tiny_random.model, tiny_random.tokenizer, max_new_tokens=4, batch_size=8)
    suffixes = SETS[0][1][:3]
    before = torch.random.get_rng_state()
    a = backend.sample(CAPITALS, suffixes, num_samples=3, temperature=1.0, top_k=40,
                       generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), before)
    b = backend.sample(CAPITALS, suffixes, num_samples=3, temperature=1.0, top_k=40,
                       generator=torch.Generator().manual_seed(0))
    assert a == b and [len(x) for x in a] == [3, 3, 3]
    top1 = backend.sample(CAPITALS, suffixes, num_samples=2, temperature=0.7, top_k=1,
                          generator=torch.Generator().manual_seed(0))
    assert top1 == [[g] * 2 for g in backend.greedy(CAPITALS, suffixes)]
