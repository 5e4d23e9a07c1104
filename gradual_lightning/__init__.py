"""gradual-lightning: SliCK knowledge probing and gradual fine-tuning of causal LMs, as Hydra sweeps."""

__version__ = "0.1.0"
