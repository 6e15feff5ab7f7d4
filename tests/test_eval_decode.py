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
# HOPE graphs take minutes to compile on 2 CPU cores: those cases run with `-m slow`.
SLOW = {"hope", "hope_attention"}


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
