"""Test setup: 8 fake CPU devices (sharding tests) and strict rank promotion, before jax import."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def float64():
    """float64 for one module's tests (`pytestmark = pytest.mark.usefixtures("float64")`): set at
    test time, not import time, and restored, so that no other module's tests run in float64
    (under xdist every module is imported into every worker)."""
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", prev)
