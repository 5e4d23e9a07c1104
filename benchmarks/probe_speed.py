"""SliCK probing speed: the prefix-caching GenerationEngine against plain HF `generate`, same prompts and dtype.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/probe_speed.py --questions 24 --num-sets 10 --dtype float32 \
        --batch-size 32 --max-new-tokens 8 --num-samples 16 --repeats 3 --out benchmarks/results/probe_speed.json
    .venv/bin/python benchmarks/probe_speed.py --tiny     # the tiny random model, a few prompts: checks it runs

Prompts: the probe's own path. `--questions` pool questions of the built-in facts (`load_world_facts`, spread over
`--relations`), `--num-sets` fixed exemplar sets of 4 per relation drawn from the dev split (`draw_exemplar_sets`),
plain prompts (`build_prompts`): questions x num_sets prompts over relations x num_sets prefixes, so a small pool has
few questions per prefix, as in SliCK probing. Greedy phase: (a) HF generate, one prompt per call; (b) HF generate,
batch_size prompts per call, left padding; (c) GenerationEngine.greedy, one call per exemplar set (chunks of
4 * batch_size of its questions: how the runner called it before cross-set batching); (d) GenerationEngine.greedy on
prompts of several exemplar sets together (the runner's greedy phase as it is). All feed the same token ids (prefix
and suffix tokenised separately and concatenated) and stop at the same tokens (EOS or any token containing "\\n").
Each method runs `--repeats` times; the table gives the median.

"Useful token-forwards" per prompt = its prompt tokens (prefix included, even though the engine computes each prefix
only once) + the generated tokens of the reference answer (a), through the stop token: the same number for every
method, so token-forwards/s is work done per second on an equal footing. FLOPs per token-forward = 2 * parameters
(tied input/output embedding counted once: that is the lm_head matmul every token pays); attention-score FLOPs
are left out (~2% at these lengths). The ceiling is the best GFLOP/s of a large torch.matmul in the same dtype and
thread count, so "% of ceiling" = useful token-forwards/s * FLOPs per token-forward / ceiling; the engine can pass
100% because it skips the work of repeated prefixes.

Sampling phase: engine.sample (one call over the chosen prompts, several exemplar sets) vs HF
generate(do_sample=True, num_return_sequences=N, top_k, temperature), one prompt per call, on the first
--sample-prompts prompts of the runner's order (spread over the prefixes).

Exact probing (probe.method=score, `scoring.score_prompts` on the engine, prompts of several exemplar sets per
call), median of --exact-repeats runs: scoring greedy on every prompt (agreement with (d)'s decoded answers under
match=exact), and the exact probability that one sample is right on the sampled prompts (the same ones as the
sampling phase) against engine sampling, as seconds per question for the WeaklyKnown/Unknown decision (at the
published 10 prompts per question). Ceiling shares count 2 * parameters FLOPs per token-forward.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gradual_lightning.data import load_world_facts  # noqa: E402
from gradual_lightning.models import load_model  # noqa: E402
from gradual_lightning.probing.config import ProbeConfig  # noqa: E402
from gradual_lightning.probing.engine import GenerationEngine  # noqa: E402
from gradual_lightning.probing.hf import naive_generate_ids  # noqa: E402
from gradual_lightning.probing.matching import is_correct  # noqa: E402
from gradual_lightning.probing.prompts import build_prompts, draw_exemplar_sets  # noqa: E402
from gradual_lightning.probing.runner import _all_items, _greedy_phase  # noqa: E402  (the runner's own order)
from gradual_lightning.probing.scoring import p_detect, score_prompts  # noqa: E402
from gradual_lightning.probing.tokens import encode_prompt, finish_text, stop_token_ids  # noqa: E402
from gradual_lightning.provenance import machine_record  # noqa: E402

STOP = "\n"
CROSS_SET = "(d) engine, cross-set batching"
TINY = ["--model", "conf/model/tiny_random.yaml", "--questions", "4", "--num-sets", "2", "--relations", "capital",
        "country_continent", "--batch-size", "4", "--max-new-tokens", "4", "--num-samples", "2", "--sample-prompts",
        "4", "--repeats", "1", "--ceiling-sizes", "256", "--out", "benchmarks/results/probe_speed_tiny.json"]


# ----------------------------------------------------------------------------------------------- prompts


def build_probe_prompts(args) -> tuple[dict[str, list], dict[str, list[str]]]:
    """The probe's prompts (question id -> one Prompt per exemplar set) and each question's gold answers."""
    rels = list(args.relations)
    data = load_world_facts(seed=0, num_train=args.questions, num_dev=10 * len(rels), num_test=0, relations=rels)
    questions = data.train[: args.questions]
    sets = draw_exemplar_sets(questions, data.dev, k=4, num_prompts=args.num_sets, mode="fixed", seed=0)
    return build_prompts(questions, sets), {q.id: list(q.answers) for q in questions}


def sampled_items(items: list, n: int) -> list:
    """n of the items in runner order, spread evenly over them (so over the prefixes): the prompts sampled."""
    return items[::max(1, len(items) // max(1, n))][:n]


def runner_order(prompts: dict[str, list]) -> list[tuple[str, str]]:
    """(prefix, suffix) pairs in the order the runner's greedy phase hands them to the backend."""
    return [(prompts[q][j].prefix, prompts[q][j].suffix) for q, j in _all_items(prompts)]


# ----------------------------------------------------------------------------------------------- measurement


def matmul_ceiling(dtype: torch.dtype, sizes: tuple[int, ...] = (768, 1024, 2048), trials: int = 3) -> float:
    """Best GFLOP/s of square matmuls in `dtype` (several sizes and trials: CPU BLAS speed varies with the shape)."""
    if dtype == torch.bfloat16:
        sizes = tuple(min(s, 512) for s in sizes)  # without native bf16 units these are slow
    best = 0.0
    for size in sizes:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        reps = max(1, int(4e9 / (2 * size**3))) if dtype != torch.bfloat16 else 1
        for _ in range(trials):
            t = time.perf_counter()
            for _ in range(reps):
                a @ b
            best = max(best, 2 * size**3 * reps / (time.perf_counter() - t) / 1e9)
    return best


COMPUTED = [0]  # tokens actually pushed through the model (padding included), counted by a forward pre-hook


def count_tokens(model) -> None:
    def hook(module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        COMPUTED[0] += int(ids.numel()) if ids is not None else 0

    model.register_forward_pre_hook(hook, with_kwargs=True)


def timed(fn, label: str = "", repeats: int = 1):
    """((last output, tokens computed in the last run), median seconds over `repeats` runs)."""
    times = []
    for _ in range(max(1, repeats)):
        COMPUTED[0] = 0
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    seconds = statistics.median(times)
    if label:
        print(f"  {label}: median {seconds:.1f} s of {[round(x, 1) for x in times]} (load {os.getloadavg()[0]:.2f})",
              file=sys.stderr, flush=True)
    return (out, COMPUTED[0]), seconds


class _NoBar:
    def update(self, n: int) -> None:
        pass


def greedy_phase(lm, prompts, args) -> tuple[dict, list[list[int]]]:
    model, tok = lm.model, lm.tokenizer
    pairs = runner_order(prompts)
    chunk = 4 * args.batch_size
    # warm-up on a throwaway prompt: first-call overheads are not what is measured
    naive_generate_ids(model, tok, [("Q: Hi?\nA: Hello\n", "Q: Bye?\nA:")] * 2, max_new_tokens=2, batch_size=2)
    GenerationEngine(model, tok, max_new_tokens=2).greedy([("Q: Hi?\nA: Hello\n", "Q: Bye?\nA:")] * 2)

    def engine() -> GenerationEngine:  # a fresh one per run: its prefix memo is part of what is timed
        return GenerationEngine(model, tok, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, stop=STOP)

    def per_set() -> list[str]:
        e, by_prefix = engine(), {}
        for i, (prefix, _) in enumerate(pairs):
            by_prefix.setdefault(prefix, []).append(i)
        answers = [""] * len(pairs)
        for rows in by_prefix.values():
            for start in range(0, len(rows), chunk):
                part = rows[start:start + chunk]
                for i, a in zip(part, e.greedy([pairs[i] for i in part])):
                    answers[i] = a
        return answers

    def cross_set() -> list[str]:
        got = _greedy_phase(engine(), prompts, chunk, _NoBar())
        return [got[q][j] for q, j in _all_items(prompts)]

    results: dict[str, dict] = {}
    ids_a = None
    reps = args.repeats
    if not args.skip_naive:
        (ids_a, comp), t = timed(lambda: naive_generate_ids(model, tok, pairs, max_new_tokens=args.max_new_tokens),
                                 "(a)", reps)
        results["(a) HF generate, 1/call"] = {"seconds": t, "computed": comp,
                                              "answers": [finish_text(tok, r, STOP) for r in ids_a]}
    (ids_b, comp), t = timed(lambda: naive_generate_ids(model, tok, pairs, max_new_tokens=args.max_new_tokens,
                                                        batch_size=args.batch_size), "(b)", reps)
    results[f"(b) HF generate, batch {args.batch_size}"] = {"seconds": t, "computed": comp,
                                                           "answers": [finish_text(tok, r, STOP) for r in ids_b]}
    (answers, comp), t = timed(per_set, "(c)", reps)
    results["(c) engine, per exemplar set"] = {"seconds": t, "computed": comp, "answers": answers}
    (answers, comp), t = timed(cross_set, "(d)", reps)
    results[CROSS_SET] = {"seconds": t, "computed": comp, "answers": answers}
    return results, ids_a if ids_a is not None else ids_b


def sampling_phase(lm, prompts, args) -> dict:
    model, tok = lm.model, lm.tokenizer
    chosen = sampled_items(runner_order(prompts), args.sample_prompts)
    kw = {"temperature": args.temperature, "top_k": args.top_k}
    results = {}
    torch.manual_seed(0)
    (hf, _), t = timed(lambda: [naive_generate_ids(model, tok, [p], max_new_tokens=args.max_new_tokens,
                                                   do_sample=True, num_return_sequences=args.num_samples, **kw)
                                for p in chosen], "HF sampling", args.repeats)
    results[f"HF generate(num_return_sequences={args.num_samples})"] = {
        "seconds": t, "samples": [[finish_text(tok, r, STOP) for r in rows] for rows in hf]}

    def engine_sample():
        engine = GenerationEngine(model, tok, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                  stop=STOP, sample_batch_rows=args.sample_rows)
        return engine.sample(chosen, num_samples=args.num_samples, generator=torch.Generator().manual_seed(0), **kw)

    (out, comp), t = timed(engine_sample, "engine sampling", args.repeats)
    results["GenerationEngine.sample"] = {"seconds": t, "samples": out, "computed": comp}
    return results


# ----------------------------------------------------------------------------------------------- exact probing


def exact_phase(lm, prompts, gold, args) -> dict:
    """probe.method=score on the same prompts (scoring.score_prompts on the engine, prompts of several exemplar sets
    per call, as the runner does): greedy correctness of every prompt, and the exact probability that one sample is
    right on the prompts the sampling phase samples. Median of --exact-repeats runs each."""
    engine = GenerationEngine(lm.model, lm.tokenizer, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                              stop=STOP)
    kw = {"temperature": args.temperature, "top_k": args.top_k, "max_new_tokens": args.max_new_tokens}
    every = runner_order(prompts)
    aliases = [gold[q] for q, _ in _all_items(prompts)]
    chosen = sampled_items(list(range(len(every))), args.sample_prompts)

    def score(idx):
        return score_prompts(engine, [every[i] for i in idx], [aliases[i] for i in idx], **kw)

    (greedy, greedy_computed), greedy_s = timed(lambda: score(range(len(every))), "scoring greedy",
                                                args.exact_repeats)
    (exact, exact_computed), exact_s = timed(lambda: score(chosen), "exact sampling", args.exact_repeats)
    return {"greedy": greedy, "greedy_computed": greedy_computed, "greedy_seconds": greedy_s,
            "sampled": exact, "sampled_computed": exact_computed, "sampled_seconds": exact_s,
            "sampled_golds": [aliases[i] for i in chosen]}


def exact_report(res: dict, prompts, gold, greedy: dict, sampling: dict, exact: dict) -> dict:
    """Rows: scoring greedy (prompts/s, agreement with the engine's decoded greedy under match=exact) and exact
    sampling vs engine sampling of num_samples per prompt (seconds per question for the WeaklyKnown/Unknown decision,
    counted at the published N_ex prompts per question), each with its share of the matmul ceiling: FLOPs = 2 *
    params * token-forwards actually computed (useful ones too for scoring greedy, as the greedy rows)."""
    gflop, ceiling, n = res["gflop_per_token_forward"], res["matmul_ceiling_gflops"], res["num_prompts"]

    def pct(token_forwards: int, seconds: float) -> float:
        return round(100 * token_forwards / seconds * gflop / ceiling, 1)

    golds = [gold[q] for q, _ in _all_items(prompts)]
    decoded = [is_correct(a, g, "exact") for a, g in zip(greedy[CROSS_SET]["answers"], golds)]
    scored = [o.greedy_hit for o in exact["greedy"]]
    t = exact["greedy_seconds"]
    rows = {"(s) scoring greedy": {
        "seconds": round(t, 3), "prompts_per_s": round(n / t, 3),
        "agreement_with_(d)": round(sum(a == b for a, b in zip(scored, decoded)) / n, 4),
        "correct_scored": sum(scored), "correct_decoded_(d)": sum(decoded),
        "speedup_vs_(d)": round(greedy[CROSS_SET]["seconds"] / t, 2),
        "pct_of_matmul_ceiling": pct(res["useful_token_forwards"], t),
        "computed_token_forwards": exact["greedy_computed"],
        "pct_of_ceiling_computed": pct(exact["greedy_computed"], t)}}
    m, k, per_question = len(exact["sampled"]), res["config"]["num_samples"], ProbeConfig().num_prompts
    eng = sampling["GenerationEngine.sample"]
    share = [sum(is_correct(x, g, "exact") for x in xs) / len(xs) for xs, g in zip(eng["samples"],
                                                                                     exact["sampled_golds"])]
    p = [o.p_sample for o in exact["sampled"]]
    rows[f"engine sampling, {k} per prompt"] = {
        "seconds": round(eng["seconds"], 3), "s_per_question": round(eng["seconds"] / m * per_question, 3),
        "mean_share_correct": round(sum(share) / m, 4),
        "prompts_with_a_correct_sample": sum(x > 0 for x in share),
        "computed_token_forwards": eng["computed"], "pct_of_ceiling_computed": pct(eng["computed"], eng["seconds"])}
    t = exact["sampled_seconds"]
    rows["exact sampling (scoring)"] = {
        "seconds": round(t, 3), "s_per_question": round(t / m * per_question, 3),
        "mean_share_correct": round(sum(p) / m, 4),
        "prompts_with_a_correct_sample": round(sum(p_detect([x], k) for x in p), 2),
        "speedup_vs_engine_sampling": round(eng["seconds"] / t, 2),
        "computed_token_forwards": exact["sampled_computed"],
        "pct_of_ceiling_computed": pct(exact["sampled_computed"], t)}
    return {"rows": rows, "note": (
        f"median of {res['config']['exact_repeats']} runs for the scoring rows, {res['config']['repeats']} for engine "
        "sampling; "
        f"s_per_question at {per_question} prompts per question; for exact sampling, mean_share_correct is the "
        "expected share and prompts_with_a_correct_sample the expected count (1 - (1 - p)^num_samples summed)"),
        "targets": {"exact_sampling>=20x_fewer_s_per_question": rows["exact sampling (scoring)"][
            "speedup_vs_engine_sampling"] >= 20}}


def print_exact(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = res["exact"]["rows"]
    cols = ["seconds", "prompts_per_s", "s_per_question", "speedup_vs_(d)", "speedup_vs_engine_sampling",
            "agreement_with_(d)", "correct_scored", "correct_decoded_(d)", "mean_share_correct",
            "prompts_with_a_correct_sample", "pct_of_matmul_ceiling", "computed_token_forwards",
            "pct_of_ceiling_computed"]
    table = Table(title="exact probing (probe.method=score) on the same prompts")
    table.add_column("method")
    for col in cols:
        table.add_column(col.replace("_", " "), justify="right")
    for name, r in rows.items():
        table.add_row(name, *(str(r.get(c, "")) for c in cols))
    console = Console(width=200)
    console.print(table)
    console.print(res["exact"]["note"])
    console.print("targets met:", res["exact"]["targets"])


# ----------------------------------------------------------------------------------------------- report


def report(args, lm, prompts, gold, greedy, ref_ids, sampling, ceiling) -> dict:
    tok = lm.tokenizer
    pairs = runner_order(prompts)
    n = len(pairs)
    prompt_tokens = sum(len(encode_prompt(tok, *p)) for p in pairs)
    useful = prompt_tokens + sum(len(r) for r in ref_ids)
    params = sum(p.numel() for p in lm.model.parameters())
    gflop_per_tf = 2 * params / 1e9
    ref_name = next(iter(greedy))
    ref = greedy[ref_name]["answers"]
    rows = {}
    for name, r in greedy.items():
        tfs = useful / r["seconds"]
        rows[name] = {
            "seconds": round(r["seconds"], 3), "prompts_per_s": round(n / r["seconds"], 3),
            "useful_token_forwards_per_s": round(tfs, 1),
            "pct_of_matmul_ceiling": round(100 * tfs * gflop_per_tf / ceiling, 1),
            "identical_vs_ref": round(sum(a == b for a, b in zip(r["answers"], ref)) / n, 4),
            "computed_token_forwards": r["computed"],
            "pct_of_ceiling_computed": round(100 * r["computed"] / r["seconds"] * gflop_per_tf / ceiling, 1),
        }
    names = list(greedy)
    for i, name in enumerate(names):
        if "engine" in name:
            for other in names[:i]:
                rows[name][f"speedup_vs_{other[:3]}"] = round(greedy[other]["seconds"] / greedy[name]["seconds"], 2)
    d = names[-1]  # the engine as the runner drives it
    s_names = list(sampling)
    hf_s, eng_s = sampling[s_names[0]]["seconds"], sampling[s_names[1]]["seconds"]
    m = sum(len(x) for x in sampling[s_names[1]]["samples"])
    samp = {name: {"seconds": round(r["seconds"], 3), "prompts_per_s": round(len(r["samples"]) / r["seconds"], 3),
                   "samples": sum(len(x) for x in r["samples"])} for name, r in sampling.items()}
    samp[s_names[1]]["speedup"] = round(hf_s / eng_s, 2)
    targets = {  # issue 10's: cross-set batching >= 10x one-per-call, >= 5x batched generate, identical answers
        "greedy_d_vs_a>=10x": rows[d].get("speedup_vs_(a)", 0) >= 10,
        "greedy_d_vs_b>=5x": rows[d]["speedup_vs_(b)"] >= 5,
        "greedy_d_vs_c>=1x": rows[d]["speedup_vs_(c)"] >= 1,
        "identical==100%": rows[d]["identical_vs_ref"] >= 1.0,
        "sampling>=8x": samp[s_names[1]]["speedup"] >= 8,
        "d>=50%_of_ceiling": rows[d]["pct_of_matmul_ceiling"] >= 50,
    }
    golds = [gold[q] for q, _ in _all_items(prompts)]
    return {
        "config": vars(args), "model": lm.name, "params": params, "gflop_per_token_forward": round(gflop_per_tf, 4),
        "machine": machine_record(),
        "matmul_ceiling_gflops": round(ceiling, 1), "num_prompts": n, "num_prefixes": len({p for p, _ in pairs}),
        "prompt_tokens": prompt_tokens, "useful_token_forwards": useful, "reference": ref_name,
        "greedy": rows, "sampling": samp, "sampling_total_samples_engine": m, "targets_met": targets,
        "accuracy_vs_gold_d": round(sum(is_correct(a, g, "exact") for a, g in zip(greedy[d]["answers"], golds)) / n, 3),
    }


def print_report(res: dict) -> None:
    head = (f"{res['model']} | {res['config']['dtype']} | {res['num_prompts']} prompts over {res['num_prefixes']} "
            f"prefixes | {res['machine']['torch_threads']} threads (load {res['machine']['loadavg_1m_before']} -> "
            f"{res['machine']['loadavg_1m']}) | matmul ceiling "
            f"{res['matmul_ceiling_gflops']} GFLOP/s | {res['gflop_per_token_forward']} GFLOP/token-forward")
    note = ("useful token-forwards = prompt tokens (prefix counted for every prompt, as if computed) + generated "
            f"tokens of {res['reference']}: {res['useful_token_forwards']} for every method; computed = tokens the "
            "method actually fed to the model (padding included), and the ceiling share that those make")
    g_cols = ["seconds", "prompts_per_s", "useful_token_forwards_per_s", "pct_of_matmul_ceiling", "identical_vs_ref",
              "speedup_vs_(a)", "speedup_vs_(b)", "speedup_vs_(c)", "computed_token_forwards",
              "pct_of_ceiling_computed"]
    s_cols = ["seconds", "prompts_per_s", "samples", "speedup"]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text
        print(head, note, sep="\n")
        for title, data, cols in (("greedy", res["greedy"], g_cols), ("sampling", res["sampling"], s_cols)):
            print(f"\n{title}: " + " | ".join(cols))
            for name, r in data.items():
                print(name, *(r.get(c, "") for c in cols), sep=" | ")
        print("targets:", res["targets_met"])
        return
    console = Console(width=200)
    console.print(head)
    console.print(note)
    for title, data, cols in (("greedy phase", res["greedy"], g_cols), ("sampling phase", res["sampling"], s_cols)):
        table = Table(title=title)
        table.add_column("method")
        for col in cols:
            table.add_column(col.replace("_", " "), justify="right")
        for name, r in data.items():
            table.add_row(name, *(str(r.get(c, "")) for c in cols))
        console.print(table)
    console.print("targets met:", res["targets_met"])


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="conf/model/smollm2_135m.yaml")
    p.add_argument("--questions", type=int, default=24, help="pool questions, spread over the relations")
    p.add_argument("--num-sets", type=int, default=10, help="fixed exemplar sets per relation (probe.num_prompts)")
    p.add_argument("--relations", nargs="+", default=["capital", "city_country", "country_continent"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--sample-prompts", type=int, default=24)
    p.add_argument("--sample-rows", type=int, default=None, help="engine rows per sampling batch (default 4*batch)")
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3, help="runs per method; the table gives the median")
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch default (one per core)")
    p.add_argument("--ceiling-sizes", type=int, nargs="+", default=[768, 1024, 2048], help="matmul sizes tried")
    p.add_argument("--exact-repeats", type=int, default=3, help="runs of each exact-probing row (median)")
    p.add_argument("--skip-naive", action="store_true", help="skip (a), the slowest baseline (reference becomes b)")
    p.add_argument("--tiny", action="store_true", help="smallest settings on the tiny random model (a smoke run; "
                   "later arguments still override)")
    p.add_argument("--out", default="benchmarks/results/probe_speed.json")
    raw = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(TINY + raw if "--tiny" in raw else raw)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    from omegaconf import OmegaConf

    cfg = OmegaConf.load(args.model if Path(args.model).exists() else ROOT / args.model)
    cfg.dtype = args.dtype
    lm = load_model(cfg)
    stop_token_ids(lm.tokenizer, STOP)  # memoised vocabulary scan, kept out of every timing
    count_tokens(lm.model)
    prompts, gold = build_probe_prompts(args)
    load_before = os.getloadavg()[0]
    ceiling = matmul_ceiling(getattr(torch, args.dtype), sizes=tuple(args.ceiling_sizes),
                             trials=1 if args.tiny else 3)
    greedy, ref_ids = greedy_phase(lm, prompts, args)
    sampling = sampling_phase(lm, prompts, args)
    res = report(args, lm, prompts, gold, greedy, ref_ids, sampling, ceiling)
    exact = exact_phase(lm, prompts, gold, args)
    res["machine"]["loadavg_1m_before"] = round(load_before, 2)
    res["exact"] = exact_report(res, prompts, gold, greedy, sampling, exact)
    print_report(res)
    print_exact(res)
    out = Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
