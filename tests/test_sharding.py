"""Data-parallel probing: two gloo ranks each probe half the questions and gather the same results as one process.

On the tiny random model: sharding and gathering need no knowledge, only answers that are the same in every process
(its weights come from a fixed seed)."""

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from gradual_lightning.data import load_world_facts
from gradual_lightning.probing.config import ProbeConfig
from gradual_lightning.probing.engine import GenerationEngine
from gradual_lightning.probing.runner import run_probe

CFG = ProbeConfig(num_prompts=2, k_shot=3, num_samples=0, max_new_tokens=8)


def _questions():
    data = load_world_facts(seed=0, num_train=20, num_dev=20, num_test=5, relations=["capital", "country_continent"])
    return data.train[:14], data.dev


def _probe(rank: int, world_size: int):
    from gradual_lightning.models import load_model

    lm = load_model(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/model/tiny_random.yaml"))
    questions, dev = _questions()
    engine = GenerationEngine(lm.model, lm.tokenizer, max_new_tokens=CFG.max_new_tokens, batch_size=CFG.batch_size)
    return run_probe(engine, questions, dev, CFG, rank=rank, world_size=world_size, progress=False)


def _worker(rank: int, world_size: int, port: int, out_dir: str):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), HF_HUB_OFFLINE="1")
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        results = _probe(rank, world_size)
        torch.save([r.to_dict() for r in results], os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_gather_the_same_results_as_one_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    single = [r.to_dict() for r in _probe(0, 1)]
    questions, _ = _questions()
    assert [r["id"] for r in rank0] == [q.id for q in questions]  # gathered, in input order
    assert rank0 == rank1  # every rank ends with the full result
    assert [(r["id"], r["greedy"], r["category"]) for r in rank0] == \
           [(r["id"], r["greedy"], r["category"]) for r in single]
