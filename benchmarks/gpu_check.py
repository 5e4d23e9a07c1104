"""The checks only a GPU can run, prepared for the day a device is lent (`python benchmarks/gpu_check.py`).

1. Both probe backends on the GPU agree with each other (greedy answers token-identical in fp32) and the engine runs
   in bf16.
2. A real smoke run with trainer.accelerator=gpu: the base probe and the stage-boundary re-probes run on the GPU
   (Lightning's teardown moves the model to the CPU after each fit; the recipe moves it back), bf16-mixed training.
Prints a table and writes benchmarks/results/gpu_check.json. On a CPU, `--device cpu` runs the same code paths.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/gpu_check.json"))
    args = ap.parse_args()
    from gradual_lightning.models import load_model
    from gradual_lightning.probing.backend import make_backend

    lm = load_model(OmegaConf.load(REPO / "conf/model/smollm2_135m.yaml"))
    model = lm.model.to(args.device).eval()
    prefix = "".join(f"Q: What is the capital of {c}?\nA: {a}\n" for c, a in
                     [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Egypt", "Cairo")])
    suffixes = [f"Q: What is the capital of {c}?\nA:" for c in
                ["Germany", "Spain", "Peru", "Kenya", "Chad", "Chile", "Nepal", "Ghana"] * 4]
    prompts = [(prefix, s) for s in suffixes]
    checks = {}
    answers = {}
    for name in ("engine", "hf"):
        start = time.perf_counter()
        answers[name] = make_backend(name, model, lm.tokenizer, max_new_tokens=8, batch_size=16).greedy(prompts)
        checks[f"{name} greedy fp32 s"] = round(time.perf_counter() - start, 2)
    checks["engine == hf greedy (fp32)"] = answers["engine"] == answers["hf"]
    bf16 = make_backend("engine", model.to(torch.bfloat16), lm.tokenizer, max_new_tokens=8, batch_size=16)
    checks["engine bf16 answers"] = len(bf16.greedy(prompts)) == len(prompts)
    accel = "gpu" if args.device.startswith("cuda") else "cpu"
    precision = "bf16-mixed" if accel == "gpu" else "32-true"
    run_dir = REPO / "benchmarks/results/gpu_smoke"
    cmd = [sys.executable, "train.py", "debug=smoke", f"trainer.accelerator={accel}", f"trainer.precision={precision}",
           "logger=none", "cache=false", f"hydra.run.dir={run_dir}", "overwrite=true"]
    start = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    checks["smoke run exit code"] = res.returncode
    checks["smoke run s"] = round(time.perf_counter() - start, 1)
    if res.returncode == 0:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        checks["smoke stages"] = len(metrics["stages"])
    else:
        checks["smoke run error"] = res.stderr[-2000:]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(checks, indent=2) + "\n")
    for k, v in checks.items():
        print(f"{k:32} {v}")
    ok = checks["engine == hf greedy (fp32)"] and checks["smoke run exit code"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
