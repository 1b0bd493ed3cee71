"""w2s-vqa: weak-to-strong video quality assessment in JAX/Flax."""

__version__ = "0.1.0"
