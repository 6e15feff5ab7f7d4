"""Test setup: 8 fake CPU devices (sharding tests), cheap XLA compiles and strict rank promotion,
before jax import."""

import os

# The tests' programs are tiny and compiled once: XLA's backend optimisations cost more than they
# save (measured on the two heaviest HOPE/CMS tests: 22% less CPU time, 10% less wall time).
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    " --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
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
