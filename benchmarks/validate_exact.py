"""Validate exact probing (probe.method=score|hybrid) against generation (SliCK as published) on real data.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/validate_exact.py            # make validate: ~60 questions a dataset
    .venv/bin/python benchmarks/validate_exact.py --tiny                      # smoke: 4 questions, 2 prompts, 2 samples
    .venv/bin/python benchmarks/validate_exact.py --questions 200 --datasets world_facts probe.backend=hf

On the built-in facts (`data=world_facts`, train split) and on EntityQuestions (SliCK's 12 in-distribution relations,
`../shared/data/entity_questions`; skipped with a message where absent), with the model of `conf/probe.yaml`
(SmolLM2-135M), each dataset's questions are probed three times through probe.py's own path (`probe.probe_inputs`,
`prober.probe_questions`, no cache), with the published settings: 10 prompts, 16 samples per prompt, no early stop,
adaptive sampling (only questions with P_greedy = 0 are sampled), exact match:
  generate (decoded greedy answers and samples), hybrid (decoded greedy, sampling scored), score (nothing decoded).
It reports:
1. greedy correctness by scoring vs by decoding, per (question, prompt), and every disagreement with its cause
   (`probing/validation_stats.py`), measured along the alias's canonical token path with the backend's
   `path_logits`;
2. calibration of p_detect (hybrid's, the questions generate sampled) against real sampling: per p_detect bin, the
   share of questions where some of the 16 x 10 samples was correct (WeaklyKnown under generate), with a Wilson 95%
   interval; scored probabilities are lower bounds, so the share may sit above the mean p_detect, not below;
3. 4x4 category matrices (rows: the first method, columns: the second) and % agreement;
4. wall time of each method: one run each, on a machine that may be busy (see `machine` in the JSON).
Extra arguments are Hydra overrides of conf/probe.yaml (model=..., probe.backend=..., mastery=...), applied last.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from omegaconf import OmegaConf, open_dict  # noqa: E402

from gradual_lightning.categories import CATEGORIES, Category  # noqa: E402
from gradual_lightning.io import write_json  # noqa: E402
from gradual_lightning.models import load_model  # noqa: E402
from gradual_lightning.probing.backend import make_backend  # noqa: E402
from gradual_lightning.probing.matching import is_correct, normalize  # noqa: E402
from gradual_lightning.probing.prober import probe_questions  # noqa: E402
from gradual_lightning.probing.prompts import build_prompts, draw_exemplar_sets  # noqa: E402
from gradual_lightning.probing.scoring import alias_paths, end_ids  # noqa: E402
from gradual_lightning.probing.validation_stats import (  # noqa: E402
    CAUSES,
    calibration_bins,
    classify_disagreement,
    continues_alias,
    matrix_agreement,
    path_departure,
)
from gradual_lightning.provenance import measurement_record  # noqa: E402
from gradual_lightning.quiet import quiet_libraries  # noqa: E402
from gradual_lightning.training.metrics import transition_matrix  # noqa: E402

DATASETS = ("world_facts", "entity_questions")
METHODS = ("generate", "hybrid", "score")
# The published probe (SliCK): every value here is what the validation is about; overrides on the command line win.
PUBLISHED = ["probe.num_prompts=10", "probe.num_samples=16", "probe.early_stop_sampling=false",
             "probe.adaptive_sampling=true", "probe.match=exact", "cache=false"]
TINY = ["probe.num_prompts=2", "probe.num_samples=2"]
TINY_QUESTIONS = 4


# ----------------------------------------------------------------------------------------------- inputs


def compose(overrides: list[str]):
    """conf/probe.yaml composed as probe.py's job sees it (HydraConfig set, so `paths` resolve)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("probe", overrides=overrides, return_hydra_config=True)
    HydraConfig().set_config(cfg)
    return cfg


def interleave(records: list, n: int) -> list:
    """The first n records taking one relation after another (relations in their first-seen order)."""
    groups: dict[str, list] = {}
    for r in records:
        groups.setdefault(r.relation, []).append(r)
    out = []
    for i in range(max((len(g) for g in groups.values()), default=0)):
        out += [g[i] for g in groups.values() if i < len(g)]
    return out[:n]


def dataset_config(name: str, n: int, overrides: list[str]):
    """probe.yaml with `data=name`, sized for n questions spread over its relations."""
    cfg = compose([f"data={name}", *overrides])
    with open_dict(cfg):
        if name == "world_facts":
            cfg.data.num_train = n
        else:  # SliCK's in-distribution relations, one home: the slick_baselines experiment
            relations = list(OmegaConf.load(ROOT / "conf/experiment/slick_baselines.yaml").data.relations)
            cfg.data.relations = relations
            cfg.data.max_per_relation = {"train": math.ceil(n / len(relations)), "dev": 50, "test": 1}
    return cfg


# ----------------------------------------------------------------------------------------------- 1. greedy


def disagreement(backend, tokenizer, prompt, question, decoded: str, scored: str | None, max_new_tokens: int,
                 tie_eps: float) -> dict:
    """One (question, prompt) where decoding and scoring disagree on greedy correctness, with its cause."""
    aliases = list(question.answers)
    paths, _, texts = alias_paths(tokenizer, [aliases], backend.stop)
    # the alias each side names: the scored hit, the decoded answer itself, or the alias it normalises to
    want = scored if scored is not None else decoded.strip()
    pick = next((j for j, t in enumerate(texts) if t == want), None)
    if pick is None:
        pick = next((j for j, t in enumerate(texts) if normalize(t) == normalize(decoded)), None)
    facts: dict = {"path_tokens": None, "departure": None, "departure_token": None, "margin": None}
    over_limit = continues = False
    if pick is not None:
        path = paths[pick]
        logits = backend.path_logits([(prompt.prefix, prompt.suffix)], [path], [0])[0]
        dep = path_departure(logits, path, end_ids(backend), needs_end=len(path) < max_new_tokens)
        over_limit = len(path) > max_new_tokens
        if dep.position is not None:
            continues = continues_alias(tokenizer.decode(list(path[:dep.position]) + [dep.token]), texts[pick])
        facts = {"path_tokens": [tokenizer.decode([t]) for t in path], "departure": dep.position,
                 "departure_token": None if dep.token is None else tokenizer.decode([dep.token]),
                 "margin": round(dep.margin, 6)}
    cause = classify_disagreement(decoded=decoded, aliases=aliases, scored_hit=scored is not None,
                                  margin=facts["margin"], over_limit=over_limit, continues=continues, tie_eps=tie_eps)
    return {"id": question.id, "question": question.question, "aliases": aliases, "decoded": decoded,
            "decoded_correct": is_correct(decoded, aliases, "exact"), "scored_answer": scored, "cause": cause, **facts}


def greedy_agreement(lm, inputs, runs, cfg, tie_eps: float) -> dict:
    """Per (question, prompt): generate's decoded answer correct (match=exact) vs score's scored greedy hit."""
    questions = inputs.questions
    sets = draw_exemplar_sets(questions, inputs.exemplars, k=cfg.k_shot, num_prompts=cfg.num_prompts,
                              mode=cfg.exemplar_sets, seed=cfg.seed)
    prompts = build_prompts(questions, sets, fmt=cfg.format, tokenizer=lm.tokenizer)  # as run_probe builds them
    backend = make_backend(cfg.backend, lm.model.eval(), lm.tokenizer, max_new_tokens=cfg.max_new_tokens,
                           batch_size=cfg.batch_size)
    gen, hybrid, score = (runs[m]["by_id"] for m in ("generate", "hybrid", "score"))
    total = agree = both_hit = 0
    rows = []
    for q in questions:
        g, s = gen[q.id], score[q.id]
        if g.exemplars != [list(p.exemplar_ids) for p in prompts[q.id]]:
            raise RuntimeError(f"{q.id}: rebuilt prompts differ from the probe's (exemplars {g.exemplars})")
        for j, (decoded, scored) in enumerate(zip(g.greedy, s.greedy)):
            hit_d, hit_s = is_correct(decoded, q.answers, cfg.match), scored is not None
            total += 1
            agree += hit_d == hit_s
            both_hit += hit_d and hit_s
            if hit_d != hit_s:
                rows.append({"prompt": j, **disagreement(backend, lm.tokenizer, prompts[q.id][j], q, decoded,
                                                          scored, cfg.max_new_tokens, tie_eps)})
    causes = {c: sum(r["cause"] == c for r in rows) for c in CAUSES}
    identical = sum(gen[q.id].greedy == hybrid[q.id].greedy for q in questions) / len(questions)
    return {"prompts": total, "agree": agree, "agreement": agree / total, "both_correct": both_hit,
            "decoded_correct": sum(is_correct(a, q.answers, cfg.match) for q in questions for a in gen[q.id].greedy),
            "scored_correct": sum(a is not None for q in questions for a in score[q.id].greedy),
            "hybrid_greedy_identical_to_generate": identical, "causes": causes, "disagreements": rows}


# ----------------------------------------------------------------------------------------------- 2-4


def calibration(runs) -> dict:
    """p_detect (hybrid: the questions generate sampled) against whether generate's samples held a correct one."""
    gen, hybrid, score = (runs[m]["by_id"] for m in ("generate", "hybrid", "score"))
    sampled = [q for q, r in gen.items() if r.p_sampled is not None]
    p_det, found, share, expected = [], [], [], []
    for qid in sampled:
        exact = hybrid[qid] if hybrid[qid].p_detect is not None else score[qid]
        p_det.append(exact.p_detect)
        found.append(gen[qid].category == Category.WEAKLY_KNOWN)
        share.append(gen[qid].p_sampled)
        expected.append(exact.p_sampled)
    bins = calibration_bins(p_det, found, means={"sampled_share": share, "expected_share": expected})
    return {"questions_sampled": len(sampled), "expected_found": round(sum(p_det), 2), "found": sum(found),
            "bins": bins}


def category_matrices(runs) -> dict:
    cats = {m: {q: r.category for q, r in runs[m]["by_id"].items()} for m in METHODS}
    out = {}
    for a, b in (("generate", "hybrid"), ("generate", "score"), ("hybrid", "score")):
        m = transition_matrix(cats[a], cats[b])
        out[f"{a} vs {b}"] = {"rows": a, "columns": b, "order": list(CATEGORIES), "matrix": m,
                              "agreement": matrix_agreement(m)}
    return out


def validate_dataset(name: str, lm, args, overrides: list[str]) -> dict:
    import probe

    cfg = dataset_config(name, args.questions, overrides)
    if name == "entity_questions" and not Path(cfg.data.path).is_dir():
        return {"skipped": f"EntityQuestions not found at {cfg.data.path} (set GL_ENTITY_QUESTIONS or data.path)"}
    inputs = probe.probe_inputs(cfg)
    inputs = replace(inputs, questions=interleave(inputs.questions, args.questions))
    base = inputs.probe
    runs = {}
    for method in METHODS:
        pc = replace(base, method=method)
        start = time.perf_counter()
        results, _ = probe_questions(lm.model, lm.tokenizer, inputs.questions, inputs.exemplars, pc,
                                     inputs.thresholds, desc=f"{name} {method}", progress=not args.quiet)
        runs[method] = {"seconds": time.perf_counter() - start, "by_id": {r.id: r for r in results}}
        print(f"  {name} {method}: {runs[method]['seconds']:.1f} s (load {os.getloadavg()[0]:.2f})",
              file=sys.stderr, flush=True)
    n = len(inputs.questions)
    gen_s = runs["generate"]["seconds"]
    return {
        "questions": n, "relations": sorted({q.relation for q in inputs.questions}), "probe": base.cache_key(),
        "mastery": OmegaConf.to_container(cfg.mastery, resolve=True),
        "greedy": greedy_agreement(lm, inputs, runs, base, args.tie_eps),
        "calibration": calibration(runs),
        "categories": category_matrices(runs),
        "time": {m: {"seconds": round(r["seconds"], 2), "s_per_question": round(r["seconds"] / n, 3),
                     "speedup_vs_generate": round(gen_s / r["seconds"], 2)} for m, r in runs.items()},
        "counts": {m: {c: sum(r.category == c for r in runs[m]["by_id"].values()) for c in CATEGORIES}
                   for m in METHODS},
    }


# ----------------------------------------------------------------------------------------------- report


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def print_report(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    console.print(f"{res['model']} | {res['machine']['torch_threads']} torch threads, load "
                  f"{res['machine']['loadavg_1m']} | overrides {res['overrides']}")
    for name, d in res["datasets"].items():
        if "skipped" in d:
            console.print(f"[bold]{name}[/bold]: skipped: {d['skipped']}")
            continue
        g = d["greedy"]
        console.print(f"\n[bold]{name}[/bold]: {d['questions']} questions over {len(d['relations'])} relations, "
                      f"{d['probe']['num_prompts']} prompts, {d['probe']['num_samples']} samples per prompt")
        console.print(f"1. greedy correctness, scored vs decoded: {g['agree']}/{g['prompts']} (question, prompt) "
                      f"agree ({_pct(g['agreement'])}); decoded correct {g['decoded_correct']}, scored correct "
                      f"{g['scored_correct']}; hybrid's greedy answers identical to generate's for "
                      f"{_pct(g['hybrid_greedy_identical_to_generate'])} of questions")
        for cause, k in g["causes"].items():
            if k:
                console.print(f"   {k:4d}  {cause}")
        if g["disagreements"]:
            t = Table(title="every disagreement")
            for col in ("id", "prompt", "decoded", "aliases", "scored", "cause", "margin"):
                t.add_column(col)
            for r in g["disagreements"]:
                t.add_row(r["id"], str(r["prompt"]), repr(r["decoded"]), ", ".join(r["aliases"]),
                          str(r["scored_answer"]), r["cause"], str(r["margin"]))
            console.print(t)
        c = d["calibration"]
        t = Table(title=f"2. p_detect vs real sampling ({c['questions_sampled']} questions sampled; expected found "
                        f"{c['expected_found']}, found {c['found']})")
        for col in ("p_detect bin", "questions", "mean p_detect", "found by sampling", "95% CI",
                    "mean sampled share", "mean expected share"):
            t.add_column(col, justify="right")
        for b in c["bins"]:
            ci = "-" if b["ci95"] is None else f"[{b['ci95'][0]:.2f}, {b['ci95'][1]:.2f}]"
            f3 = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
            t.add_row(b["bin"], str(b["n"]), f3(b["mean_p_detect"]), f"{b['found']} ({_pct(b['share_found'])})", ci,
                      f3(b["mean_sampled_share"]), f3(b["mean_expected_share"]))
        console.print(t)
        mats = list(d["categories"].values())
        console.print("3. categories: " + "; ".join(f"{m['rows']} vs {m['columns']} {_pct(m['agreement'])} agree"
                                                     for m in mats))
        t = Table()
        t.add_column("rows \\ columns")
        for m in mats:
            for col in m["order"]:
                t.add_column(f"{m['rows'][:3]}\\{m['columns'][:3]} {Category(col).short}", justify="right")
        for i, row_name in enumerate(mats[0]["order"]):
            t.add_row(Category(row_name).short, *(str(v) for m in mats for v in m["matrix"][i]))
        console.print(t)
        t = Table(title="4. wall time (one run each)")
        for col in ("method", "seconds", "s per question", "speedup vs generate"):
            t.add_column(col, justify="right")
        for method, r in d["time"].items():
            t.add_row(method, str(r["seconds"]), str(r["s_per_question"]), f"{r['speedup_vs_generate']}x")
        console.print(t)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--questions", type=int, default=None,
                   help="questions per dataset (default 60, sized for ~10-15 min on 2 CPU cores; --tiny: 4)")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--tiny", action="store_true", help="smoke mode: 4 questions, 2 prompts, 2 samples per prompt")
    p.add_argument("--tie-eps", type=float, default=1e-3,
                   help="a top-1 minus top-2 logit gap below this is an argmax near-tie")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", default="benchmarks/results/validate_exact.json")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of conf/probe.yaml, applied last")
    args = p.parse_args(argv)
    if args.questions is None:
        args.questions = TINY_QUESTIONS if args.tiny else 60
    if args.questions < 1:
        p.error(f"--questions={args.questions} must be >= 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_libraries()
    overrides = PUBLISHED + (TINY if args.tiny else []) + list(args.overrides)
    lm = load_model(compose(overrides).model)
    start = time.perf_counter()
    datasets = {name: validate_dataset(name, lm, args, overrides) for name in args.datasets}
    res = {"model": lm.name, "overrides": overrides, "config": vars(args), "datasets": datasets,
           "wall_time_s": round(time.perf_counter() - start, 1), **measurement_record(ROOT)}
    print_report(res)
    print(f"wrote {write_json(args.out, res)}")
    return res


if __name__ == "__main__":
    main()
