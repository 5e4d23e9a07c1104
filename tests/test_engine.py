"""GenerationEngine: prefix-cached greedy/sampled answers equal plain HF generate, one exemplar set per call or
several batched together; batching, seeding, stopping, scoring."""

from __future__ import annotations

import copy

import pytest
import torch

from gradual_lightning.probing.backend import cast_copy, make_backend, probe_model
from gradual_lightning.probing.batching import (
    common_prefix_len,
    length_buckets,
    plan_groups,
    shared_template_len,
    suffix_batch_inputs,
)
from gradual_lightning.probing.engine import GenerationEngine
from gradual_lightning.probing.hf import naive_generate
from gradual_lightning.probing.kv import KVMemo, stack_rows
from gradual_lightning.probing.tokens import encode_prompt, encode_suffix, sample_token

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
ONE_CAPITAL = "Q: What is the capital of Chile?\nA: Santiago\n"
CAPITALS_2 = ONE_CAPITAL + "Q: What is the capital of Canada?\nA: Ottawa\n"
SETS = [
    (CAPITALS, [f"Q: What is the capital of {c}?\nA:" for c in COUNTRIES]),
    (CONTINENTS, [f"Q: On which continent is {c}?\nA:" for c in COUNTRIES[:6]]),
    (CITIES, [f"Q: In which country is the city of {c}?\nA:" for c in
              ["Munich", "Marseille", "Kyoto", "Rio de Janeiro", "Llanfairpwllgwyngyll", "Graz"]]),
    (CAPITALS_2, [f"Q: What is the capital of {c}?\nA:" for c in ["Peru", "Norway", "Vietnam"]]),  # another set
]


# ----------------------------------------------------------------------------------------------- pure helpers


def test_suffix_batch_inputs_left_pads_between_prefix_and_suffix():
    ids, mask, pos = suffix_batch_inputs([[5, 6, 7], [8]], prefix_lens=[2, 2], pad_id=0, extra=2)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 1, 1, 1]]
    assert pos.tolist() == [[2, 3, 4], [1, 1, 2]]  # a pad repeats the last prefix position; it is never attended


def test_suffix_batch_inputs_with_prefixes_of_different_lengths():
    """Each row's prefix fills its first slots; the pads after it and before its suffix are masked."""
    ids, mask, pos = suffix_batch_inputs([[5, 6], [8], [9]], prefix_lens=[3, 1, 0], pad_id=0, extra=1)
    assert ids.tolist() == [[5, 6], [0, 8], [0, 9]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 1, 1], [0, 0, 0, 0, 1, 1]]
    assert pos.tolist() == [[3, 4], [0, 1], [0, 0]]  # real tokens count on from their own prefix
    with pytest.raises(ValueError, match="2 prefix lengths for 3 suffixes"):
        suffix_batch_inputs([[5], [6], [7]], prefix_lens=[1, 1], pad_id=0)


def test_length_buckets_group_neighbours():
    batches = length_buckets([5, 1, 4, 2, 3], 2)
    assert batches == [[1, 3], [4, 2], [0]]


def test_common_prefix_shared_template_and_group_plan():
    assert common_prefix_len([[1, 2, 3], [1, 2, 4, 5], [1, 2]]) == 2
    assert common_prefix_len([[7], [8]]) == 0
    assert shared_template_len([[1, 2, 3], [1, 2, 4, 5], [1, 2]], min_saving=0) == 1  # each keeps one own token
    assert shared_template_len([[1, 2, 3, 9]] * 10, min_saving=24) == 3  # 9 more rows x 3 tokens saved > 24
    assert shared_template_len([[1, 2, 3, 9]] * 9, min_saving=24) == 0  # 8 x 3 = 24: not more than a forward
    assert shared_template_len([[1, 2, 3, 9]] * 9, min_saving=24 * 100) == 0
    assert shared_template_len([[1, 2, 3, 9]], min_saving=0) == 0  # one row saves nothing
    assert plan_groups([5] * 27 + [6] * 4 + [9], overhead=24) == [(0, 27), (27, 32)]
    assert plan_groups([5, 5, 6], overhead=100) == [(0, 3)]
    assert plan_groups([1, 9], overhead=0) == [(0, 1), (1, 2)]


def test_stack_rows_pads_each_prefix_and_memo_is_bounded():
    short = [(torch.ones(1, 2, 1, 3), torch.ones(1, 2, 1, 3) * 2)]
    long = [(torch.full((1, 2, 3, 3), 5.0), torch.full((1, 2, 3, 3), 6.0))]
    ((k, v),) = stack_rows([short, long, []], [1, 0, 2, 0])
    assert k.shape == (4, 2, 3, 3)
    assert k[:, 0, :, 0].tolist() == [[5, 5, 5], [1, 0, 0], [0, 0, 0], [1, 0, 0]]
    assert v[1, 0, :, 0].tolist() == [2, 0, 0]
    assert stack_rows([[], []], [0, 1]) == []
    ((k, _),) = stack_rows([long], [0, 0])
    assert k.shape == (2, 2, 3, 3) and k.data_ptr() == long[0][0].data_ptr()  # one prefix: a view, no copy
    memo, made = KVMemo(2), []
    for key in "abca":
        memo.get(key, lambda key=key: made.append(key) or [])
    assert made == ["a", "b", "c", "a"] and len(memo) == 2  # "a" was evicted by "c"
    with pytest.raises(ValueError, match="prefix_cache_size=0"):
        KVMemo(0)


def test_sample_token_stays_in_top_k():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]]).repeat(200, 1)
    drawn = sample_token(logits, temperature=1.0, top_k=2, generator=torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {1, 2}


# ----------------------------------------------------------------------------------------------- real model


def _pairs(sets=SETS):
    return [(prefix, s) for prefix, suffixes in sets for s in suffixes]


def _interleaved(pairs):
    """A fixed order that mixes the exemplar sets (every 3rd prompt, then the rest): results must follow it."""
    return [i for k in range(3) for i in range(k, len(pairs), 3)]


@pytest.fixture(scope="module")
def smol_answers(smollm2):
    """Reference: HF generate, one prompt per call, on every prompt of SETS (4 exemplar sets, 3 relations)."""
    pairs = _pairs()
    return pairs, naive_generate(smollm2.model, smollm2.tokenizer, pairs, max_new_tokens=5)


def _engine(lm, **kw):
    return GenerationEngine(lm.model, lm.tokenizer, **{"max_new_tokens": 5, "batch_size": 4, **kw})


def test_greedy_identical_to_naive_generate_fp32_per_prefix(smollm2, smol_answers):
    """One call per exemplar set (batches of 4: several buckets, mixed lengths)."""
    pairs, ref = smol_answers
    engine = _engine(smollm2)
    got = [a for prefix, suffixes in SETS for a in engine.greedy([(prefix, s) for s in suffixes])]
    assert len(got) == 22
    assert got == ref
    assert sum(a in ("Berlin", "Madrid", "Lima", "Nairobi") for a in got) >= 3  # the model does answer


def test_greedy_across_exemplar_sets_identical_to_naive_generate_fp32(smollm2, smol_answers):
    """Prompts of 4 exemplar sets (3 relations, prefixes of 2 and 4 exemplars) in one call, interleaved: each batch
    mixes prefixes; answers come back in input order, token-identical to one prompt per `generate` call."""
    pairs, ref = smol_answers
    order = _interleaved(pairs)
    for kw in ({}, {"batch_size": 8, "prefix_cache_size": 1}):  # a memo of one: evicted within every batch
        got = _engine(smollm2, **kw).greedy([pairs[i] for i in order])
        assert got == [ref[i] for i in order], kw


def test_mixed_length_batch_equals_batch_size_one(smollm2, smol_answers):
    pairs, ref = smol_answers
    lengths = {len(encode_prompt(smollm2.tokenizer, *p)) for p in pairs}
    assert len(lengths) >= 6  # the batches really mix lengths
    assert _engine(smollm2, batch_size=1).greedy(pairs[:9]) == ref[:9]  # two prefixes, one row per batch


@pytest.mark.parametrize("kw", [dict(share_suffix_prefix=False, group_overhead_tokens=-1),
                                dict(group_overhead_tokens=0)], ids=["plain_prefix_cache", "grouped_prefill"])
def test_prefill_variants_agree(smollm2, smol_answers, kw):
    """Without sharing the question template / with prefill split in length groups, across prefixes: same answers."""
    pairs, ref = smol_answers
    assert _engine(smollm2, batch_size=8, **kw).greedy(pairs) == ref


def test_engine_reused_across_calls_and_templates(smollm2, smol_answers):
    """Same prefix, another question template (extends the memoised prefix K/V), then a 2-suffix call (no sharing)."""
    pairs, ref = smol_answers
    engine = _engine(smollm2, batch_size=8)
    n0 = len(SETS[0][1])
    assert engine.greedy(pairs[:n0]) == ref[:n0]
    other = [(CAPITALS, s) for s in SETS[1][1]]
    assert engine.greedy(other) == _engine(smollm2, batch_size=8, share_suffix_prefix=False).greedy(other)
    assert engine.greedy(pairs[:2]) == ref[:2]


def test_scoring_across_prefixes_equals_per_prefix_scoring(smollm2, smol_answers):
    """path_logits on prompts of several exemplar sets in one call = the same paths scored one prefix per call."""
    pairs, ref = smol_answers
    tok = smollm2.tokenizer
    order = _interleaved(pairs)[:10]
    prompts = [pairs[i] for i in order]
    paths = [encode_suffix(tok, " " + (ref[i] or "x")) for i in order] + [encode_suffix(tok, " Paris")] * 2
    owner = list(range(len(prompts))) + [0, 5]
    engine = _engine(smollm2, batch_size=4)
    joint = engine.path_logits(prompts, paths, owner)
    for j, (path, o) in enumerate(zip(paths, owner)):
        alone = _engine(smollm2).path_logits([prompts[o]], [path], [0])[0]
        assert torch.allclose(joint[j], alone, atol=1e-4, rtol=1e-4), j


def test_no_stop_string_in_outputs(smollm2, smol_answers):
    assert all("\n" not in a for a in smol_answers[1])
    engine = _engine(smollm2, max_new_tokens=6, batch_size=8)
    samples = engine.sample(_pairs()[::7], num_samples=4, temperature=1.0, top_k=40,
                            generator=torch.Generator().manual_seed(0))
    assert all("\n" not in a for row in samples for a in row)


# ----------------------------------------------------------------------------------------------- tiny_random model

# prefixes of very different lengths in one batch: none, one exemplar, four, twelve
LONG = CAPITALS + CONTINENTS + CITIES
MIXED = ([("", s) for s in SETS[0][1][:3]] + [(ONE_CAPITAL, s) for s in SETS[0][1][3:5]]
         + [(CONTINENTS, s) for s in SETS[1][1][:3]] + [(LONG, s) for s in SETS[2][1][:3]])


def _sample(lm, seed, n=5, prompts=None, **kw):
    engine = GenerationEngine(lm.model, lm.tokenizer, max_new_tokens=4, batch_size=2, **kw)
    return engine.sample(prompts or _pairs(SETS[:1])[:3], num_samples=n, temperature=0.9, top_k=40,
                         generator=torch.Generator().manual_seed(seed))


def test_sampling_reproducible_and_counted(tiny_random):
    a, b, c = _sample(tiny_random, 1), _sample(tiny_random, 1), _sample(tiny_random, 2)
    assert a == b
    assert a != c
    assert [len(x) for x in a] == [5, 5, 5]
    assert all("\n" not in s for row in a for s in row)


def test_sampling_across_prefixes_is_reproducible(tiny_random):
    a = _sample(tiny_random, 4, n=3, prompts=MIXED)
    assert a == _sample(tiny_random, 4, n=3, prompts=MIXED, prefix_cache_size=1)  # whatever the memo holds
    assert [len(x) for x in a] == [3] * len(MIXED)
    assert a != _sample(tiny_random, 5, n=3, prompts=MIXED)


def test_sampling_batch_rows_do_not_change_counts(tiny_random):
    out = _sample(tiny_random, 3, n=4, sample_batch_rows=4)  # one prompt per batch
    assert [len(x) for x in out] == [4, 4, 4]


def test_top_k_one_sampling_equals_greedy(tiny_random):
    engine = GenerationEngine(tiny_random.model, tiny_random.tokenizer, max_new_tokens=4, batch_size=3)
    greedy = engine.greedy(MIXED)
    sampled = engine.sample(MIXED, num_samples=3, temperature=0.7, top_k=1, generator=torch.Generator().manual_seed(0))
    assert sampled == [[g] * 3 for g in greedy]


def test_tiny_greedy_batched_equals_naive(tiny_random):
    prompts = _pairs(SETS[2:3])
    engine = GenerationEngine(tiny_random.model, tiny_random.tokenizer, max_new_tokens=4, batch_size=4)
    ref = naive_generate(tiny_random.model, tiny_random.tokenizer, prompts, max_new_tokens=4)
    assert engine.greedy(prompts) == ref
    assert naive_generate(tiny_random.model, tiny_random.tokenizer, prompts, max_new_tokens=4, batch_size=4) == ref


@pytest.mark.parametrize("kw", [dict(batch_size=16), dict(batch_size=1), dict(batch_size=5, group_overhead_tokens=0),
                                dict(batch_size=16, share_suffix_prefix=False)],
                         ids=["one_batch", "one_row", "grouped_prefill", "no_template"])
def test_tiny_prefixes_of_very_different_lengths_in_one_batch(tiny_random, kw):
    """No prefix, 1, 4 and 12 exemplars (0 to ~150 tokens) batched together: each row = its own prompt alone."""
    lm = tiny_random
    lengths = sorted({len(encode_prompt(lm.tokenizer, p, "")) for p, _ in MIXED})
    assert lengths[0] <= 1 and lengths[-1] > 100
    ref = naive_generate(lm.model, lm.tokenizer, MIXED, max_new_tokens=4)
    engine = GenerationEngine(lm.model, lm.tokenizer, max_new_tokens=4, **kw)
    assert engine.greedy(MIXED) == ref
    assert engine.greedy(MIXED[-1:]) == ref[-1:]  # a batch of one row
    hf = make_backend("hf", lm.model, lm.tokenizer, max_new_tokens=4, batch_size=4)
    paths, owner = [[100, 200], [300], [5, 6, 7], [9]], [0, 3, 7, 10]
    for a, b in zip(engine.path_logits(MIXED, paths, owner), hf.path_logits(MIXED, paths, owner)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)


def test_stop_at_first_is_consulted_and_keeps_counts_bounded(smollm2):
    seen = []

    def decided(i, answer):
        seen.append((i, answer))
        return True

    engine = _engine(smollm2, max_new_tokens=6, batch_size=8)
    out = engine.sample(_pairs()[::8], num_samples=6, temperature=1.0, top_k=40,
                        generator=torch.Generator().manual_seed(1), stop_at_first=decided)
    assert all(1 <= len(row) <= 6 for row in out)
    assert {i for i, _ in seen} == {0, 1, 2}
    assert all(answer in out[i] for i, answer in seen)


def test_peft_wrapped_model_gives_same_answers(tiny_random):
    from peft import LoraConfig, get_peft_model

    tiny = tiny_random
    base = GenerationEngine(tiny.model, tiny.tokenizer, max_new_tokens=3, batch_size=4).greedy(MIXED)
    peft_model = get_peft_model(copy.deepcopy(tiny.model), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    engine = GenerationEngine(peft_model, tiny.tokenizer, max_new_tokens=3, batch_size=4)
    assert engine.greedy(MIXED) == base  # fresh LoRA (B = 0) is a no-op


def test_bfloat16_model_runs(tiny_random):
    engine = GenerationEngine(copy.deepcopy(tiny_random.model).to(torch.bfloat16), tiny_random.tokenizer,
                              max_new_tokens=3, batch_size=4)
    assert len(engine.greedy(MIXED)) == len(MIXED)
    out = engine.sample(MIXED[:2] + MIXED[-2:], num_samples=3, temperature=0.5, top_k=40,
                        generator=torch.Generator().manual_seed(0))
    assert [len(x) for x in out] == [3, 3, 3, 3]


# ----------------------------------------------------------------------------------------------- score method


def test_scoring_agrees_with_decoding(smollm2, smol_answers):
    """Greedy answers decoded across exemplar sets are scored hits, in one scoring call across the same sets."""
    from gradual_lightning.probing.scoring import greedy_matches_alias, p_sample_equals_alias

    prompts = [smol_answers[0][i] for i in _interleaved(smol_answers[0])[:10]]
    engine = GenerationEngine(smollm2.model, smollm2.tokenizer, max_new_tokens=12, batch_size=16)
    greedy = engine.greedy(prompts)  # long enough for every answer to end (scoring has no length cap)
    aliases = [[g, "Zzyzx Qq"] for g in greedy]
    assert greedy_matches_alias(engine, prompts, aliases) == [True] * len(prompts)
    assert greedy_matches_alias(engine, prompts, [["Zzyzx Qq"]] * len(prompts)) == [False] * len(prompts)
    p_top1 = p_sample_equals_alias(engine, prompts, aliases, temperature=0.5, top_k=1)
    assert p_top1 == pytest.approx([1.0] * len(prompts))
    p = p_sample_equals_alias(engine, prompts, aliases, temperature=0.5, top_k=40)
    assert all(0.0 < x <= 1.0 + 1e-6 for x in p)


# ----------------------------------------------------------------------------------------------- backends


def test_both_backends_satisfy_the_protocol_and_agree(tiny_random):
    from gradual_lightning.probing.backend import ProbeBackend

    prompts = _pairs(SETS[:1])[:2] + _pairs(SETS[1:2])[:2]
    engine, hf = (make_backend(name, tiny_random.model, tiny_random.tokenizer, max_new_tokens=4, batch_size=4)
                  for name in ("engine", "hf"))
    assert isinstance(engine, ProbeBackend) and isinstance(hf, ProbeBackend)
    assert hf.greedy(prompts) == engine.greedy(prompts)
    paths, owner = [[100, 200], [300], [5, 6, 7]], [0, 1, 3]
    for a, b in zip(engine.path_logits(prompts, paths, owner), hf.path_logits(prompts, paths, owner)):
        assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4)
    with pytest.raises(ValueError, match="probe.backend='vllm' is not one of"):
        make_backend("vllm", tiny_random.model, tiny_random.tokenizer, max_new_tokens=4, batch_size=4)


def test_hf_backend_sampling_is_seeded_and_leaves_the_global_rng_alone(tiny_random):
    from gradual_lightning.probing.hf import HFGenerateBackend

    backend = HFGenerateBackend(tiny_random.model, tiny_random.tokenizer, max_new_tokens=4, batch_size=8)
    prompts = _pairs(SETS[:1])[:3]
    before = torch.random.get_rng_state()
    a = backend.sample(prompts, num_samples=3, temperature=1.0, top_k=40, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.random.get_rng_state(), before)
    b = backend.sample(prompts, num_samples=3, temperature=1.0, top_k=40, generator=torch.Generator().manual_seed(0))
    assert a == b and [len(x) for x in a] == [3, 3, 3]
    top1 = backend.sample(prompts, num_samples=2, temperature=0.7, top_k=1, generator=torch.Generator().manual_seed(0))
    assert top1 == [[g] * 2 for g in backend.greedy(prompts)]


def test_probe_model_casts_a_copy_for_another_dtype_and_leaves_the_trained_model_as_it_was(tiny_random):
    model = tiny_random.model
    was_training = model.training
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    try:
        for same_dtype in (None, "float32", "fp32"):  # no dtype, or the model's own: the model itself, in eval mode
            with probe_model(model, same_dtype) as probed:
                assert probed is model and not model.training
            assert model.training
        with probe_model(model, "bfloat16") as probed:
            assert probed is not model and not probed.training
            assert {p.dtype for p in probed.parameters()} == {torch.bfloat16}
            cast = dict(probed.named_parameters())
            assert all(torch.equal(cast[n], w.to(torch.bfloat16)) for n, w in before.items())  # the weights as now
            assert make_backend("engine", probed, tiny_random.tokenizer, max_new_tokens=4, batch_size=4).greedy(
                _pairs(SETS[:1])[:2])  # probing runs on the copy
        assert model.training
        assert all(p.dtype == torch.float32 and torch.equal(p, before[n]) for n, p in model.named_parameters())
    finally:
        model.train(was_training)


def test_a_cast_copy_of_a_peft_model_has_the_lora_merged_and_answers_as_the_adapted_model(tiny_random):
    """probe.dtype on a model under training: the copy is the plain model with the current LoRA folded in (no
    adapter layers left), its logits those of the adapted model, and the adapted model keeps its adapter."""
    from peft import LoraConfig, PeftModel, get_peft_model

    adapted = get_peft_model(copy.deepcopy(tiny_random.model),
                             LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained adapter (B starts at zero, which would merge to nothing)
    ids = torch.tensor([encode_prompt(tiny_random.tokenizer, *_pairs(SETS[:1])[0])])
    with torch.inference_mode():
        adapted.eval()
        want = adapted(input_ids=ids).logits
        plain = tiny_random.model(input_ids=ids).logits
        probed = cast_copy(adapted, torch.float64)  # what probe_model(adapted, "bfloat16") yields, in float64
        assert not isinstance(probed, PeftModel)
        assert not any("lora" in name for name, _ in probed.named_parameters())
        got = probed(input_ids=ids).logits
    assert not torch.allclose(want, plain, atol=1e-4)  # the adapter changes the answers...
    torch.testing.assert_close(got.float(), want, atol=1e-4, rtol=1e-4)  # ...and the copy keeps that change
    assert isinstance(adapted, PeftModel) and any("lora_B" in n for n, _ in adapted.named_parameters())


def test_the_cast_copys_output_layer_gets_a_contiguous_input(tiny_random):
    """transformers hands the output layer the last position's hidden states as a strided view; the cast copy makes
    them contiguous first (else matmul broadcasts the [vocab, hidden] weight over the batch: backend.cast_copy)."""
    ids = torch.tensor([encode_prompt(tiny_random.tokenizer, *_pairs(SETS[:1])[0])] * 2)
    seen = []
    with torch.inference_mode(), probe_model(tiny_random.model, "bfloat16") as probed:
        probed.get_output_embeddings().register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous()))
        probed(input_ids=ids, logits_to_keep=1)
    assert seen == [True]
    seen.clear()  # the model itself, without the copy's hook: a strided view (what the hook is there for)
    handle = tiny_random.model.get_output_embeddings().register_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous()))
    try:
        with torch.inference_mode():
            tiny_random.model(input_ids=ids, logits_to_keep=1)
    finally:
        handle.remove()
    assert seen == [False]
