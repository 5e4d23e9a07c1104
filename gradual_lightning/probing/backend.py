"""The probe-backend protocol: what the probe runner and the scorer need from a model, and nothing more.

Three calls, each over a sequence of prompts, a prompt being a (prefix, suffix) pair (the few-shot exemplars, the
question) with any mix of prefixes in one call; results come back in input order:
- `greedy`: the greedy answer text of each prompt;
- `sample`: `num_samples` sampled answers per prompt (temperature, top-k), reproducible from a torch.Generator;
- `path_logits`: teacher-forced scores, the logits along given answer token paths (exact probabilities), each path
  belonging to one prompt (`owner`).
Answers are decoded, cut at `stop` and stripped the same way by every backend (`tokens.finish_text`).

Backends: `engine` (prefix-KV cache, the default) and `hf` (plain `generate`, the reference). A new backend (vLLM,
say) implements these three methods and registers in BACKENDS; the runner does not change. How a backend batches is
its own business: the engine batches prompts of many prefixes together, `hf` hands them to `generate` as they come.

`probe_model` gives the model a probe runs on: the model itself, or, where `probe.dtype` names another dtype than the
model's (bfloat16 probes of a model trained in float32), a copy cast to that dtype for the probe's duration: the
weights as they are now, the model being trained untouched. The copy costs the model's size in memory once more.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gradual_lightning.probing.tokens import PromptPair

if TYPE_CHECKING:
    import torch


@runtime_checkable
class ProbeBackend(Protocol):
    tokenizer: object
    stop: str
    stop_ids: list[int]

    def greedy(self, prompts: Sequence[PromptPair]) -> list[str]: ...

    def sample(self, prompts: Sequence[PromptPair], *, num_samples: int, temperature: float, top_k: int,
               generator: torch.Generator, stop_at_first: Callable[[int, str], bool] | None = None
               ) -> list[list[str]]: ...

    def path_logits(self, prompts: Sequence[PromptPair], paths: Sequence[Sequence[int]],
                    owner: Sequence[int]) -> list[torch.Tensor]: ...


BACKENDS = ("engine", "hf")


def make_backend(name: str, model, tokenizer, *, max_new_tokens: int, batch_size: int) -> ProbeBackend:
    """The backend `probe.backend` names, on `model` as it is now (its device and dtype)."""
    if name == "engine":
        from gradual_lightning.probing.engine import GenerationEngine

        return GenerationEngine(model, tokenizer, max_new_tokens=max_new_tokens, batch_size=batch_size)
    if name == "hf":
        from gradual_lightning.probing.hf import HFGenerateBackend

        return HFGenerateBackend(model, tokenizer, max_new_tokens=max_new_tokens, batch_size=batch_size)
    raise ValueError(f"probe.backend={name!r} is not one of {BACKENDS}")


@contextmanager
def probe_model(model, dtype: str | None) -> Iterator:
    """`model` in eval mode for a probe (its train/eval mode restored after): itself, or with a `dtype` name (a key
    of `models.loading.DTYPES`) other than its own, an eval-mode copy cast to it, dropped after."""
    from gradual_lightning.models.loading import resolve_dtype

    target = None if dtype is None else resolve_dtype(dtype)
    was_training = model.training
    model.eval()
    try:
        yield model if target in (None, next(model.parameters()).dtype) else copy.deepcopy(model).to(target)
    finally:
        model.train(was_training)
