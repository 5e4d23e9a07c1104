"""Model loading: shipped GGUF weights converted once into a local cache, any HF model, or a tiny random one."""

from gradual_lightning.models.loading import LoadedModel, ModelError, load_model

__all__ = ["LoadedModel", "ModelError", "load_model"]
