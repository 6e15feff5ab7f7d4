"""Outer optimizers (optax GradientTransformations) selected by `config.optim.name`."""

from hope_jax.optim.registry import OPTIMIZERS, build_optimizer

__all__ = ["OPTIMIZERS", "build_optimizer"]
