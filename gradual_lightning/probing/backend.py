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
weights as they are now (a LoRA merged into them), the model being trained untouched. The copy costs the model's size
in memory once more.
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
        yield model if target in (None, next(model.parameters()).dtype) else cast_copy(model, target)
    finally:
        model.train(was_training)


def cast_copy(model, dtype: torch.dtype):
    """An eval-mode copy of `model` in `dtype`, a peft model's active LoRA merged into its weights first (in the
    model's own dtype), so the copy answers as the model does now without the adapter's extra matmuls.

    Its output layer gets its input made contiguous: transformers hands it the last position's hidden states as a
    strided view (`logits_to_keep=1`), and for a weight that does not require grad (a frozen base model's, as under
    peft) PyTorch's matmul then broadcasts the weight over the batch instead of folding the batch into one matrix
    product; in bf16 on a CPU that copies the [vocab, hidden] weight once per row, which made a bf16 probe of a
    model under LoRA training 3.6x slower than one of the plain model (README "Probing speed")."""
    from peft import PeftModel

    clone = copy.deepcopy(model)
    if isinstance(clone, PeftModel):
        clone = clone.merge_and_unload()
    clone = clone.to(dtype).eval()
    head = clone.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(_contiguous_input)
    return clone


def _contiguous_input(module, args: tuple) -> tuple:
    return (args[0].contiguous(), *args[1:])
