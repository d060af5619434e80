"""Command-line entry points of dreamer_jax."""
