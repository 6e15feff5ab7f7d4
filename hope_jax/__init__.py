"""hope_jax: Nested Learning / HOPE in JAX (models, memories, optimizers, data, training, eval)."""

__version__ = "0.1.0"  # the package version (pyproject reads it from here)
