"""dreamer_jax: DreamerV3 world models with RSSM or VTA dynamics, in JAX."""

__version__ = "0.1.0"
