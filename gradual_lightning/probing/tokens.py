"""Token-level pieces every probe backend shares, so all of them feed and read exactly the same ids.

Tokenisation: the prefix (few-shot exemplars) gets the tokenizer's normal special tokens, the suffix (the question)
none, and the two id lists are concatenated (`encode_prompt`). Answers are the decoded new text, cut at the first
stop string and stripped (`finish_text`); decoding stops at a token whose text contains the stop string, at EOS, or
after `max_new_tokens`. Token choice (`greedy_token`, `sample_token`) and the distribution a sample is drawn from
(`truncated_probs`) are small pure functions, the same for decoding and for teacher-forced scoring.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

PromptPair = tuple[str, str]  # (prefix, suffix): the few-shot exemplars and the question, tokenised separately
PromptInput = str | PromptPair | Sequence[int]  # a string (tokenised as a prefix), (prefix, suffix), or ids


def encode_prefix(tokenizer, prefix: str) -> list[int]:
    """Prefix ids with the tokenizer's normal special tokens (none for SmolLM2, BOS for Llama-3)."""
    return list(tokenizer(prefix).input_ids)


def encode_suffix(tokenizer, suffix: str) -> list[int]:
    return list(tokenizer(suffix, add_special_tokens=False).input_ids)


def encode_prompt(tokenizer, prefix: str, suffix: str) -> list[int]:
    """The exact ids every backend feeds for `prefix + suffix` (prefix and suffix tokenised separately)."""
    return encode_prefix(tokenizer, prefix) + encode_suffix(tokenizer, suffix)


def prompt_ids(tokenizer, prompt: PromptInput) -> list[int]:
    if isinstance(prompt, str):
        return encode_prefix(tokenizer, prompt)
    if isinstance(prompt, tuple) and len(prompt) == 2 and all(isinstance(p, str) for p in prompt):
        return encode_prompt(tokenizer, *prompt)
    return [int(t) for t in prompt]


def eos_ids(model, tokenizer) -> list[int]:
    """EOS ids from the tokenizer and the model's generation config."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    extra = getattr(gen, "eos_token_id", None) if gen is not None else None
    ids.update(extra if isinstance(extra, (list, tuple)) else [extra])
    return sorted(int(i) for i in ids if i is not None)


_VOCAB_SCANS: dict[tuple[int, str, bool], tuple[object, list[int]]] = {}


def _scan_vocab(tokenizer, stop: str, leading_whitespace_only: bool) -> list[int]:
    """Ids of vocabulary tokens whose text contains `stop` (optionally with only whitespace before it).
    Decoding the vocabulary takes about a second: memoised per tokenizer."""
    key = (id(tokenizer), stop, leading_whitespace_only)
    hit = _VOCAB_SCANS.get(key)
    if hit is None or hit[0] is not tokenizer:
        texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        ids = [i for i, t in enumerate(texts) if stop and stop in t
               and (not leading_whitespace_only or not t.split(stop, 1)[0].strip())]
        hit = (tokenizer, ids)
        _VOCAB_SCANS[key] = hit
    return list(hit[1])


def stop_token_ids(tokenizer, stop: str) -> list[int]:
    """Ids of every vocabulary token whose text contains `stop`: decoding stops at them."""
    return _scan_vocab(tokenizer, stop, leading_whitespace_only=False)


def answer_end_ids(tokenizer, eos: Sequence[int], stop: str = "\n") -> list[int]:
    """EOS + tokens whose text holds `stop` with only whitespace before it: the tokens after which `finish_text`
    leaves an answer exactly as it was before them (what teacher-forced scoring counts as "the answer ends")."""
    return sorted(set(_scan_vocab(tokenizer, stop, leading_whitespace_only=True)) | set(eos))


def finish_text(tokenizer, ids: Sequence[int], stop: str) -> str:
    """Decoded answer: special tokens skipped, cut at the first stop string, stripped."""
    text = tokenizer.decode(list(ids), skip_special_tokens=True)
    if stop:
        text = text.split(stop, 1)[0]
    return text.strip()


def greedy_token(logits: torch.Tensor) -> torch.Tensor:
    """[B, V] -> [B] argmax (first index on ties, as HF generate)."""
    return logits.argmax(dim=-1)


def sample_token(logits: torch.Tensor, *, temperature: float, top_k: int, generator: torch.Generator) -> torch.Tensor:
    """[B, V] -> [B]: softmax(top-k logits / temperature), one multinomial draw per row from `generator`."""
    if temperature <= 0:
        return greedy_token(logits)
    logits = logits.float() / temperature
    if 0 < top_k < logits.shape[-1]:
        values, indices = torch.topk(logits, top_k, dim=-1)
        choice = torch.multinomial(torch.softmax(values, dim=-1), 1, generator=generator)
        return indices.gather(-1, choice).squeeze(-1)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)


def truncated_probs(logits: torch.Tensor, *, temperature: float, top_k: int) -> torch.Tensor:
    """The distribution `sample_token` draws from: softmax over the top-k of logits / temperature, zero elsewhere."""
    if temperature <= 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    logits = logits / temperature
    if 0 < top_k < logits.shape[-1]:
        values, indices = torch.topk(logits, top_k, dim=-1)
        return torch.zeros_like(logits).scatter_(-1, indices, torch.softmax(values, dim=-1))
    return torch.softmax(logits, dim=-1)


def stop_flags(next_ids: torch.Tensor, stop_mask: torch.Tensor) -> torch.Tensor:
    """[B] bool: the token just chosen ends its row (EOS or a token whose text contains the stop string)."""
    return stop_mask[next_ids]
