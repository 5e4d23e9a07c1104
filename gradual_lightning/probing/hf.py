"""The plain Hugging Face probe backend: `model.generate` and one plain forward per scored path.

No cache reuse across prompts: it is the reference the prefix-KV engine is checked against (token-identical greedy
answers in fp32), the baseline of `make bench`, and the backend to fall back on for a model the engine cannot drive
(`probe.backend=hf`). It feeds exactly the ids the engine feeds (`tokens.encode_prompt`) and stops where it stops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import GenerationConfig

from gradual_lightning.probing.batching import pad_batch
from gradual_lightning.probing.tokens import (
    PromptInput,
    PromptPair,
    encode_prompt,
    eos_ids,
    finish_text,
    prompt_ids,
    stop_token_ids,
)


def generation_config(model, tokenizer, *, max_new_tokens: int, stop: str = "\n", **kw) -> GenerationConfig:
    """HF GenerationConfig that stops where the engine stops (EOS + every token containing `stop`)."""
    stops = sorted(set(stop_token_ids(tokenizer, stop)) | set(eos_ids(model, tokenizer)))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    kw.setdefault("do_sample", False)
    if not kw["do_sample"]:
        kw.update(temperature=None, top_k=None, top_p=None)
    return GenerationConfig(max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad, **kw)


@torch.inference_mode()
def naive_generate_ids(model, tokenizer, prompts: Sequence[PromptInput], *, max_new_tokens: int, batch_size: int = 1,
                       stop: str = "\n", **sampling) -> list[list[int]]:
    """New token ids per returned sequence (through the first stop token) from HF `model.generate`.

    `batch_size` prompts per call, left-padded when > 1. `sampling` goes to the GenerationConfig (e.g. do_sample=True,
    num_return_sequences=16, temperature=0.5, top_k=40); rows come out prompt-major as from HF.
    """
    device = next(model.parameters()).device
    gen = generation_config(model, tokenizer, max_new_tokens=max_new_tokens, stop=stop, **sampling)
    stops = set(gen.eos_token_id)
    ids = [prompt_ids(tokenizer, p) for p in prompts]
    out_ids: list[list[int]] = []
    for start in range(0, len(ids), max(1, batch_size)):
        input_ids, mask = pad_batch(ids[start : start + max(1, batch_size)], gen.pad_token_id, "left")
        out = model.generate(input_ids=input_ids.to(device), attention_mask=mask.to(device), generation_config=gen)
        for row in out[:, input_ids.shape[1] :].tolist():
            end = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
            out_ids.append(row[:end])
    return out_ids


def naive_generate(model, tokenizer, prompts: Sequence[PromptInput], *, max_new_tokens: int, batch_size: int = 1,
                   stop: str = "\n") -> list[str]:
    """Baseline: HF `model.generate`, greedy, `batch_size` prompts per call (left padding when > 1).

    A prompt is a string (tokenised like a prefix), a (prefix, suffix) pair (tokenised exactly as the engine does:
    use this for fair comparisons) or a list of token ids. Same stop tokens and post-processing as the engine.
    """
    rows = naive_generate_ids(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                              stop=stop)
    return [finish_text(tokenizer, row, stop) for row in rows]


class HFGenerateBackend:
    """The probe-backend protocol (`backend.ProbeBackend`) on plain `generate` and plain forwards: prompts go to
    `generate` `batch_size` at a time in input order, whatever their prefixes (left-padded when > 1)."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 12, batch_size: int = 32, stop: str = "\n"):
        self.model, self.tokenizer, self.stop = model, tokenizer, stop
        self.max_new_tokens, self.batch_size = int(max_new_tokens), max(1, int(batch_size))
        self.stop_ids = sorted(set(stop_token_ids(tokenizer, stop)) | set(eos_ids(model, tokenizer)))

    def greedy(self, prompts: Sequence[PromptPair]) -> list[str]:
        return naive_generate(self.model, self.tokenizer, list(prompts),
                              max_new_tokens=self.max_new_tokens, batch_size=self.batch_size, stop=self.stop)

    def sample(self, prompts: Sequence[PromptPair], *, num_samples: int, temperature: float, top_k: int,
               generator: torch.Generator, stop_at_first: Callable[[int, str], bool] | None = None
               ) -> list[list[str]]:
        """`num_return_sequences` samples per prompt. `generate` draws from the global RNG: it is seeded from
        `generator` inside a forked RNG state, so results are reproducible and the caller's RNG is untouched.
        `stop_at_first` is accepted for the protocol; every sample is decoded (it only saves time in the engine)."""
        n = max(1, int(num_samples))
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        device = next(self.model.parameters()).device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            rows = naive_generate_ids(self.model, self.tokenizer, list(prompts),
                                      max_new_tokens=self.max_new_tokens, batch_size=max(1, self.batch_size // n),
                                      stop=self.stop, do_sample=True, num_return_sequences=n,
                                      temperature=temperature, top_k=top_k)
        texts = [finish_text(self.tokenizer, r, self.stop) for r in rows]
        return [texts[i * n:(i + 1) * n] for i in range(len(prompts))]

    @torch.inference_mode()
    def path_logits(self, prompts: Sequence[PromptPair], paths: Sequence[Sequence[int]],
                    owner: Sequence[int]) -> list[torch.Tensor]:
        """fp32 logits [len(path) + 1, V] along each path, one plain forward per path (no cache)."""
        device = next(self.model.parameters()).device
        out = []
        for o, path in zip(owner, paths):
            ids = encode_prompt(self.tokenizer, *prompts[o]) + list(path)
            logits = self.model(input_ids=torch.tensor([ids], device=device)).logits[0]
            out.append(logits[len(ids) - len(path) - 1:].float())
        return out
