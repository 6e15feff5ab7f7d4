"""Recurrent decoding (KV cache + carried fast state) equals the parallel forward's logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax.eval.sample import generate
from hope_jax.models.decode import Decoder, decode_chunk
from hope_jax.models.lm import LM
from tests.helpers import tiny_config

# fp32 end to end; the two paths differ only by summation order (chunked attention over a cache
# vs one masked matmul), so logits agree to ~1e-5 relative on O(1) values.
ATOL = 2e-4

CASES = {
    "transformer": {},
    "hope_attention": {"model.hope.cms_signal": "outer"},
    "hope": {"model.hope.cms_signal": "outer", "model.hope.chunk_size": 4},
}
# The HOPE graph at the tiny_config width takes minutes to compile on 2 CPU cores: `-m slow`.
# hope_attention (~8 s) runs by default: its lost-KV-cache regression hid behind `slow`.
SLOW = {"hope"}


def _model(name, **over):
    cfg = tiny_config(**{"model.name": name, **CASES[name], **over})
    model = LM(cfg.model)
    params = model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
    return cfg, model, params


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in sorted(CASES)])
def test_recurrent_equals_parallel(name):
    cfg, model, params = _model(name)
    toks = (np.arange(2 * 13).reshape(2, 13) * 37 + 5) % cfg.model.vocab_size
    ref = np.asarray(jax.jit(model.apply)({"params": params}, jnp.asarray(toks)), np.float32)
    dec = Decoder(cfg.model, params, max_len=16)
    st = dec.init(batch=2)
    got, st = dec.prefill(st, toks[:, :6])  # prefill crosses a chunk boundary (C = 4 for hope)
    outs = [np.asarray(got)]
    for i in range(6, 13):
        lg, st = dec.step(st, toks[:, i])
        outs.append(np.asarray(lg)[:, None])
    np.testing.assert_allclose(np.concatenate(outs, 1), ref, atol=ATOL, rtol=1e-4)


def test_generate_recurrent_matches_recompute():
    cfg, model, params = _model("transformer")
    a = generate(model, params, [1, 2, 3], 8, temperature=0.0, recurrent=True)
    b = generate(model, params, [1, 2, 3], 8, temperature=0.0, recurrent=False)
    assert a == b and len(a) == 8


def test_unsupported_models_fall_back():
    """Titans and in-context-CMS HOPE report no recurrent support (generate then recomputes)."""
    for name, over in (("titans_lmm", {}), ("hope", {"model.hope.cms_signal": "ntp"})):
        cfg = tiny_config(**{"model.name": name, **over})
        assert decode_chunk(cfg.model) == 0
        with pytest.raises(ValueError, match="cannot decode"):
            Decoder(cfg.model, None, 8)


def _segmented_hope():
    return tiny_config(**{"model.name": "hope", "model.d_model": 16, "model.num_layers": 1,
                          "model.num_heads": 2, "model.hope.chunk_size": 4,
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
    params = model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
    out = generate(model, params, [1, 2, 3, 4, 5], 6, temperature=0.0)
    assert len(out) == 6 and all(0 <= t < cfg.model.vocab_size for t in out)
