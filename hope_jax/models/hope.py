"""HOPE block (SPEC §4.5, Eqs. 94-97, A5): pre-norm residual sequence mixer -> CMS chain.

    h = x + Mixer(Norm(x))                      Mixer = self-modifying Titans (`hope`) or global
                                                softmax attention (`hope_attention`)
    y = CMS(h)                                  levels fast -> slow, each h <- h + MLP_l(Norm(h))
                                                (sequential, Eq. 70/73), or the aggregated
                                                independent variant h + sum_l a_l MLP_l(Norm_l(h))
                                                (Eq. 74); `nested` = sequential + Eq. 72 re-init.

The block is called as `block(x, positions, segment_ids, carry=None)` by the one LM body:
  * carry None: CMS levels are static FFNs, or run their own `local` update (memory/cms.py);
  * carry {"mixer": state or None, ...}: the mixer continues from its state (Hope-Attention: a KV
    cache from `init_carry`; self-modifying Titans: fast weights, optimizer state, conv tails,
    None = fresh from the meta-learned initial state) and (x, new carry) is returned. The `ntp`
    segment driver adds per-level CMS fast parts: "deltas" (None for static levels), "keeps"
    (per-level token masks) and "zs" (zero-valued stand-ins for a new document's Delta).

Shape legend: B batch, T time, D width.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hope_jax.memory import cms
from hope_jax.memory.self_modifying import SelfModifyingTitans
from hope_jax.models.config import ModelConfig
from hope_jax.models.transformer import norm, out_std
from hope_jax.nn.attention import Attention, init_cache
from hope_jax.nn.layers import dtype_of


class AttentionMixer(nn.Module):
    """Global causal softmax attention with the mixer interface (Hope-Attention, SPEC §4.5)."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, state=None):
        """Returns (y, new KV cache); the cache (`init_carry`) is None in the parallel forward."""
        cfg = self.cfg
        attn = Attention(cfg.num_heads, cfg.kv_heads, cfg.head_dim, 0, cfg.rope_theta,
                         cfg.init_std, out_std(cfg), dtype_of(cfg.dtype), dtype_of(cfg.param_dtype),
                         q_block=cfg.attn_q_block, impl=cfg.attn_impl, name="attn")
        if state is None:
            return attn(x_BTD, positions_BT, segment_ids_BT), None
        return attn(x_BTD, positions_BT, segment_ids_BT, cache=state)


def self_modifying_layer(cfg: ModelConfig, **kw) -> SelfModifyingTitans:
    """The self-modifying Titans layer shaped by a model config (heads, width, dtypes, sections
    `hope` and `inner`); `kw` as the layer's attributes (name, out_std, inner_reference)."""
    return SelfModifyingTitans(cfg.num_heads, cfg.head_dim, cfg.hope, cfg.inner, cfg.init_std,
                               **{"dtype": cfg.dtype, "param_dtype": cfg.param_dtype, **kw})


def _mixer(cfg: ModelConfig, attention: bool, name: str | None = "mixer") -> nn.Module:
    if attention:
        return AttentionMixer(cfg, name=name)
    return self_modifying_layer(cfg, out_std=out_std(cfg), name=name)


class HopeBlock(nn.Module):
    """Self-modifying Titans -> CMS (model name `hope`)."""

    cfg: ModelConfig
    attention: bool = False

    @staticmethod
    def init_carry(cfg: ModelConfig, batch: int, max_len: int) -> dict:
        """The self-modifying mixer's fresh state (pure; replaced by the meta-learned initial
        weights before the first token, `memory/frame.py`)."""
        return {"mixer": _mixer(cfg, False, None).init_state(batch)}

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, carry=None):
        cfg, hc = self.cfg, self.cfg.hope
        mixer = _mixer(cfg, self.attention)
        h_in = norm(cfg, "mixer_norm")(x_BTD)
        y, state = mixer(h_in, positions_BT, segment_ids_BT,
                         None if carry is None else carry["mixer"])
        h = x_BTD + y.astype(x_BTD.dtype)
        levels = [cms.CMSLevel(cfg.hidden, cfg.init_std, out_std(cfg), dtype_of(cfg.param_dtype),
                               name=f"cms_{i}")(cfg.d_model) for i in range(len(hc.cms_periods))]
        taps = []
        h = self._cms(levels, h, positions_BT, segment_ids_BT, carry, taps)
        if carry is None:
            return h
        return h, {**carry, "mixer": state, **({"teach": sum(taps)} if taps else {})}

    def _cms(self, levels, h, positions_BT, segment_ids_BT, carry, taps):
        """The CMS chain; under `cms_grad="residual"` each in-context level also appends to
        `taps` a zero-valued term that carries its fast part's tangent to the final residual
        (the LM body adds them there), while the chain itself sees the fast part as a constant:
        the inner gradient then reaches Delta through the head and the level alone."""
        cfg, hc = self.cfg, self.cfg.hope
        dt = dtype_of(cfg.dtype)
        t = h.shape[1]
        sg = jax.lax.stop_gradient

        deltas = (carry or {}).get("deltas") or (None,) * len(levels)

        def run(i, p, x, scale=1.0):
            if deltas[i] is not None:
                d, keep, z = carry["deltas"][i], carry["keeps"][i], carry["zs"][i]
                if hc.cms_grad == "exact":
                    return cms.level_forward(p, x, d, keep, cfg.norm_eps, dt, z)
                tap = cms.level_forward(sg(p), sg(x), d, keep, cfg.norm_eps, dt, z)
                taps.append(sg(scale) * (tap - sg(tap)))
                return cms.level_forward(p, x, sg(d), keep, cfg.norm_eps, dt, sg(z))
            period = hc.cms_periods[i]
            if carry is None and hc.cms_signal == "local" and 0 < period < t:
                return cms.local_level(p, x, segment_ids_BT, positions_BT, period, hc.cms_lr,
                                       not cfg.inner.doc_reset, cfg.norm_eps)
            return cms.level_forward(p, x, eps=cfg.norm_eps, dtype=dt)

        if hc.cms_variant != "independent":  # sequential chain (Eq. 70); nested re-init in ntp.py
            for i, p in enumerate(levels):
                h = run(i, p, h)
            return h
        agg = self.param("cms_agg", nn.with_logical_partitioning(
            nn.initializers.constant(1.0 / len(levels)), ("norm",)), (len(levels),),
            dtype_of(cfg.param_dtype))
        out = h
        for i, p in enumerate(levels):  # Eq. 74: h + sum_l a_l MLP_l(Norm_l(h))
            a = agg[i].astype(h.dtype)
            out = out + a * (run(i, p, h, a) - h)
        return out


class HopeAttentionBlock(HopeBlock):
    """Hope-Attention (SPEC §4.5): global softmax attention -> CMS (model name `hope_attention`)."""

    attention: bool = True

    @staticmethod
    def init_carry(cfg: ModelConfig, batch: int, max_len: int) -> dict:
        """An empty KV cache of `max_len` tokens for the attention mixer."""
        return {"mixer": init_cache(batch, max_len, cfg.kv_heads, cfg.head_dim,
                                    jnp.promote_types(dtype_of(cfg.dtype), jnp.float32))}
