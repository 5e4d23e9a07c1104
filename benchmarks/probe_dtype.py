"""probe.dtype=bfloat16 against the model's own float32, on the real probe path: time, answers and categories.

    .venv/bin/python benchmarks/probe_dtype.py --questions 100 --repeats 3 --out benchmarks/results/probe_dtype.json
    .venv/bin/python benchmarks/probe_dtype.py --tiny          # smoke: the tiny random model, 4 questions, 2 prompts
    .venv/bin/python benchmarks/probe_dtype.py --lora --probes greedy --out benchmarks/results/probe_dtype_lora.json

Questions: --questions pool questions of the built-in facts (conf/probe.yaml with `data=world_facts`, all five
relations, seed 0), exemplars from its dev split, conf/probe/default.yaml's settings (10 prompts of 4 exemplars, 16
samples at T 0.5 / top-k 40) and no probe cache. Each probe goes through `prober.probe_questions`, the call train.py
and probe.py make, once with the model's own dtype (float32) and once with `probe.dtype=bfloat16` (a bf16 copy of
the model, made inside the timed call, as in a run), after a warm-up probe of one question in each:

- greedy: method=generate with no samples (what a re-probe after a stage and the test answers run);
- hybrid: greedy decoded and the exact probabilities of 16 samples for questions with no greedy hit (what the base
  probe of the pool runs in `make run`).

Each runs --repeats times, the dtypes alternating (float32, bfloat16, float32, ...) so drift in the machine's speed
hits both; the table gives medians, the float32 / bfloat16 ratio, the share of (question, prompt) greedy answers that
are identical, and for hybrid the share of questions in the same category, with the 4x4 matrix (rows float32) in the
JSON. Also the matmul ceiling (GFLOP/s) in each dtype: bf16 pays only where the CPU has bf16 units.

--lora wraps the model in a fresh LoRA adapter of conf/finetune/lora_small.yaml (peft, as train.py does before its
base probe) and probes that: what every probe of a training run sees. Its B matrices start at zero, so the answers
are the plain model's; what it measures is the cost of probing a peft model in each dtype.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from probe_speed import matmul_ceiling  # noqa: E402
from validate_exact import compose, dataset_config  # noqa: E402

from gradual_lightning.io import write_json  # noqa: E402
from gradual_lightning.models import load_model  # noqa: E402
from gradual_lightning.probing.prober import probe_questions  # noqa: E402
from gradual_lightning.probing.validation_stats import matrix_agreement  # noqa: E402
from gradual_lightning.provenance import measurement_record  # noqa: E402
from gradual_lightning.quiet import quiet_libraries  # noqa: E402
from gradual_lightning.training.metrics import transition_matrix  # noqa: E402
from probe import probe_inputs  # noqa: E402

DTYPES = (None, "bfloat16")  # None: the model's own (float32)
PROBES = {"greedy": {"method": "generate", "num_samples": 0}, "hybrid": {"method": "hybrid"}}
TINY = ["model=tiny_random", "probe.num_prompts=2", "probe.num_samples=2"]


def measure(lm, inputs, probe: str, repeats: int) -> dict:
    """Median seconds per dtype, and the results of the last run of each."""
    def run(dtype, questions):
        cfg = dataclasses.replace(inputs.probe, dtype=dtype, **PROBES[probe])
        return probe_questions(lm.model, lm.tokenizer, questions, inputs.exemplars, cfg, inputs.thresholds,
                               progress=False)[0]

    for dtype in DTYPES:  # warm-up on one question: first-call overheads are not what is measured
        run(dtype, inputs.questions[:1])
    times: dict = {d: [] for d in DTYPES}
    results: dict = {}
    for _ in range(repeats):
        for dtype in DTYPES:
            start = time.perf_counter()
            results[dtype] = run(dtype, inputs.questions)
            times[dtype].append(time.perf_counter() - start)
            print(f"  {probe} {dtype or 'float32'}: {times[dtype][-1]:.1f} s (load {os.getloadavg()[0]:.2f})",
                  file=sys.stderr, flush=True)
    fp32, bf16 = results[None], results["bfloat16"]
    answers = [(a, b) for x, y in zip(fp32, bf16) for a, b in zip(x.greedy, y.greedy)]
    matrix = transition_matrix({x.id: x.category for x in fp32}, {y.id: y.category for y in bf16})
    median = {d: statistics.median(t) for d, t in times.items()}
    return {"seconds_float32": round(median[None], 2), "seconds_bfloat16": round(median["bfloat16"], 2),
            "speedup": round(median[None] / median["bfloat16"], 2),
            "runs_s": {d or "float32": [round(x, 2) for x in t] for d, t in times.items()},
            "prompts": len(answers), "identical_greedy": round(sum(a == b for a, b in answers) / len(answers), 4),
            "same_p_greedy": round(sum(x.p_greedy == y.p_greedy for x, y in zip(fp32, bf16)) / len(fp32), 4),
            "same_category": round(matrix_agreement(matrix), 4),
            "categories_float32_rows_bfloat16_cols": matrix,
            "greedy_differences": [{"id": x.id, "prompt": j, "float32": a, "bfloat16": b}
                                   for x, y in zip(fp32, bf16) for j, (a, b) in enumerate(zip(x.greedy, y.greedy))
                                   if a != b]}


def with_lora(model):
    """`model` wrapped in a fresh adapter of conf/finetune/lora_small.yaml, as CausalLMModule wraps it."""
    from omegaconf import OmegaConf
    from peft import get_peft_model

    from gradual_lightning.training.module import FinetuneConfig

    finetune = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "finetune" / "lora_small.yaml"))
    return get_peft_model(model, FinetuneConfig.from_config(finetune).lora_config())


def print_table(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    cols = ["seconds_float32", "seconds_bfloat16", "speedup", "prompts", "identical_greedy", "same_p_greedy",
            "same_category"]
    table = Table(title=f"probe.dtype on {res['questions']} questions of the built-in facts ({res['model']}"
                        f"{' + LoRA' if res['lora'] else ''}, median of {res['repeats']})")
    table.add_column("probe")
    for c in cols:
        table.add_column(c.replace("_", " "), justify="right")
    for name, r in res["probes"].items():
        table.add_row(name, *(str(r[c]) for c in cols))
    console = Console(width=160)
    console.print(table)
    console.print(f"matmul ceiling GFLOP/s: {res['matmul_ceiling_gflops']}; machine: {res['machine']}")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--questions", type=int, default=None, help="pool questions (default 100; --tiny: 4)")
    p.add_argument("--repeats", type=int, default=None, help="runs per probe and dtype (default 3; --tiny: 1)")
    p.add_argument("--probes", nargs="+", default=list(PROBES), choices=list(PROBES))
    p.add_argument("--lora", action="store_true", help="probe the model wrapped in a fresh LoRA (a training run's)")
    p.add_argument("--tiny", action="store_true", help="smoke mode: the tiny random model, 4 questions, 2 prompts")
    p.add_argument("--out", default="benchmarks/results/probe_dtype.json")
    p.add_argument("overrides", nargs="*", help="Hydra overrides of conf/probe.yaml, applied last")
    args = p.parse_args(argv)
    args.questions = args.questions or (4 if args.tiny else 100)
    args.repeats = args.repeats or (1 if args.tiny else 3)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_libraries()
    overrides = ["cache=false", *(TINY if args.tiny else []), *args.overrides]
    inputs = probe_inputs(dataset_config("world_facts", args.questions, overrides))
    lm = load_model(compose(overrides).model)
    if args.lora:
        lm = dataclasses.replace(lm, model=with_lora(lm.model))
    load_before = os.getloadavg()[0]
    ceiling = {name: round(matmul_ceiling(dtype, trials=1 if args.tiny else 3), 1)
               for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
    res = {"model": lm.name, "lora": args.lora, "questions": len(inputs.questions), "repeats": args.repeats,
           "overrides": overrides,
           "probe": dataclasses.asdict(inputs.probe), "matmul_ceiling_gflops": ceiling,
           "probes": {name: measure(lm, inputs, name, args.repeats) for name in args.probes},
           **measurement_record(ROOT)}
    res["machine"]["loadavg_1m_before"] = round(load_before, 2)
    print_table(res)
    print(f"wrote {write_json(Path(args.out) if Path(args.out).is_absolute() else ROOT / args.out, res)}")
    return res


if __name__ == "__main__":
    main()
