"""Recurrent decoding (the LM body with a carry) equals the parallel forward, for every model the
registry says decodes; parametrized from the registry, so a new model is tested automatically."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax.eval.sample import generate
from hope_jax.models.decode import Decoder, decode_chunk
from hope_jax.models.lm import LM, MODELS
from tests.helpers import tiny_config

# fp32 end to end; the two paths differ only by summation order (chunked attention over a cache
# vs one masked matmul, chunked vs whole-sequence scans), so logits agree to ~1e-5 relative.
ATOL = 2e-4
TINY = {"model.d_model": 16, "model.num_layers": 1, "model.num_heads": 2, "model.mlp_hidden": 32,
        "model.inner.chunk_size": 4, "model.memory.window": 4, "model.memory.segment_len": 4,
        "model.memory.n_persistent": 2,
        "model.hope.cms_periods": (4, 0), "model.hope.cms_signal": "outer"}
T = 11  # prefill 4 tokens (one chunk of 4, one compiled shape), then 7 steps crossing 8


def _cfg(name, **over):
    return tiny_config(**{**TINY, "model.name": name, **over})


DECODES = sorted(n for n in MODELS if decode_chunk(_cfg(n).model))


def _check_decode_equals_parallel(cfg, t: int, prefill: int):
    """Prefill `prefill` tokens, step through the rest of t; logits == the parallel forward."""
    model = LM(cfg.model)
    toks = (np.arange(2 * t).reshape(2, t) * 37 + 5) % cfg.model.vocab_size
    params = jax.jit(model.init)(jax.random.key(0), jnp.asarray(toks))["params"]
    ref = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(toks)), np.float32)
    np.testing.assert_allclose(_decode(cfg, params, toks, prefill), ref, atol=ATOL, rtol=1e-4)


def _decode(cfg, params, toks, prefill: int):
    dec = Decoder(cfg.model, params, max_len=toks.shape[1])
    got, st = dec.prefill(dec.init(batch=toks.shape[0]), toks[:, :prefill])
    outs = [np.asarray(got)]
    for i in range(prefill, toks.shape[1]):
        lg, st = dec.step(st, toks[:, i])
        outs.append(np.asarray(lg)[:, None])
    return np.concatenate(outs, 1)


@pytest.mark.parametrize("name", DECODES)
def test_recurrent_equals_parallel(name):
    _check_decode_equals_parallel(_cfg(name), T, 4)


def test_every_model_decodes():
    """The registry's decode capability is not silently lost (decoding would fall back to
    recompute): every built-in model decodes at the tiny config."""
    assert sorted(MODELS) == DECODES


@pytest.mark.slow  # the tiny_config width (d=64, 2 layers): HOPE compiles take minutes
@pytest.mark.parametrize("name", ["hope", "hope_attention", "transformer"])
def test_recurrent_equals_parallel_wider(name):
    cfg = tiny_config(**{"model.name": name, "model.hope.cms_signal": "outer",
                         "model.inner.chunk_size": 4})
    _check_decode_equals_parallel(cfg, 13, 6)


NTP = {"model.hope.cms_signal": "ntp", "model.hope.cms_periods": (4, 8, 0),
       "model.hope.cms_variant": "nested", "model.hope.cms_lr": 0.5,
       "model.hope.cms_first_order": True}  # first order: the same updates, half the compile


@pytest.mark.parametrize("over", [{}, pytest.param({"model.hope.cms_first_order": False},
                                                   marks=pytest.mark.slow, id="second_order")])
def test_hope_ntp_decodes_with_carried_cms_fast_parts(over):
    """HOPE with in-context CMS levels (ntp, two dynamic levels, nested re-init): the decoder
    carries the CMS fast parts and commits each segment's update when its last label arrives;
    logits equal the parallel segment-by-segment forward (which would differ without the
    updates: cms_lr 0.5)."""
    # 3 segments of 4: updates of level 0 at 4 and 8, of level 1 at 8
    _check_decode_equals_parallel(_cfg("hope", **{**NTP, **over}), 12, 5)


def test_generate_recurrent_matches_recompute():
    cfg = _cfg("transformer")
    model = LM(cfg.model)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
    a = generate(model, params, [1, 2, 3], 8, temperature=0.0, recurrent=True)
    b = generate(model, params, [1, 2, 3], 8, temperature=0.0, recurrent=False)
    assert a == b and len(a) == 8


def test_unsupported_models_fall_back():
    """Models the registry says cannot decode raise a clear error (generate then recomputes)."""
    cfg = _cfg("hope", **{"model.hope.cms_signal": "local"})
    assert decode_chunk(cfg.model) == 0
    with pytest.raises(ValueError, match="cannot decode"):
        Decoder(cfg.model, None, 8)


def _segmented_hope():
    return tiny_config(**{"model.name": "hope", "model.d_model": 16, "model.num_layers": 1,
                          "model.num_heads": 2, "model.inner.chunk_size": 4,
                          "model.hope.cms_periods": (8, 0), "model.hope.cms_first_order": True})


def test_recompute_buffer_is_a_multiple_of_the_ntp_segment():
    """HOPE with an in-context (ntp) CMS level runs in segments of its fastest period: the
    recompute buffer is rounded up to a multiple of it (a 266-token NIAH prompt used to fail)."""
    from hope_jax.eval.sample import buffer_len

    assert [buffer_len(_segmented_hope().model, n) for n in (8, 11, 16, 17)] == [8, 16, 16, 24]
    assert buffer_len(tiny_config().model, 11) == 11


@pytest.mark.slow  # one HOPE-ntp compile (~1-2 min on 2 cores)
def test_generate_segmented_hope_from_an_odd_length_prompt():
    cfg = _segmented_hope()
    model = LM(cfg.model)
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
    out = generate(model, params, [1, 2, 3, 4, 5], 6, temperature=0.0)
    assert len(out) == 6 and all(0 <= t < cfg.model.vocab_size for t in out)


def test_mamba2_conv_bias_is_zero_at_init_and_decodes():
    """PAPER.md D14: `baseline.conv_bias` adds mamba_ssm's conv biases (on x, B, C): zero at init
    (the logits equal the bias-free model's with the same other weights); with random biases
    they change the logits, and recurrent decoding still equals the parallel forward."""
    cfg = _cfg("mamba2", **{"model.baseline.conv_bias": True})
    model, plain = LM(cfg.model), LM(_cfg("mamba2").model)
    toks = jnp.asarray((np.arange(2 * T).reshape(2, T) * 37 + 5) % cfg.model.vocab_size)
    params = jax.jit(model.init)(jax.random.key(0), toks)["params"]
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    biases = [p for p, _ in flat if "bias" in jax.tree_util.keystr(p) and "_conv" in
              jax.tree_util.keystr(p)]
    assert len(biases) == 3 * cfg.model.num_layers
    strip = jax.tree_util.tree_map_with_path(
        lambda p, x: None if p in biases else x, params)
    base = jax.jit(plain.apply)({"params": strip}, toks)
    np.testing.assert_array_equal(jax.jit(model.apply)({"params": params}, toks), base)
    keys = iter(jax.random.split(jax.random.key(1), len(biases)))
    params = jax.tree_util.tree_map_with_path(
        lambda p, x: jax.random.normal(next(keys), x.shape, x.dtype) if p in biases else x, params)
    ref = np.asarray(jax.jit(model.apply)({"params": params}, toks), np.float32)
    assert np.abs(ref - np.asarray(base)).max() > 1e-3
    np.testing.assert_allclose(_decode(cfg, params, np.asarray(toks), 4), ref, atol=ATOL,
                               rtol=1e-4)
