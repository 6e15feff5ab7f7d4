"""The paper's Table 1 baselines as sequence mixers over the one memory engine (SPEC §5).

Every mixer is projections -> (short conv, feature map, norms) -> a `hope_jax.memory.baselines`
memory -> output norm / gate -> output projection; only the projections and gates differ, the
memory update is a configuration of the engine (objective, retention, optimizer, memory):

  linear_attention  phi(q), phi(k) = elu + 1; y = phi(q) S / phi(q) z  (Katharopoulos: the
                    normaliser z_t = sum phi(k_s) is the same memory with value 1)
  retnet            RoPE q, k; k / sqrt(K); fixed decay gamma_h = 1 - 2^(-5-h); values 2K wide;
                    per-head RMSNorm (RetNet's GroupNorm) * swish(x W_g)
  mamba2            in_proj -> z, x, B, C, dt; conv4 + SiLU on x, B, C; dt = softplus(. + bias),
                    a = exp(dt A), A = -exp(A_log); y = SSD(x, B, C) + D x; RMSNorm(y * silu(z))
  deltanet          conv4 + SiLU on q, k, v; L2-normalised q, k; beta = sigmoid(x W_b);
                    per-head RMSNorm
  gated_deltanet    as deltanet plus a = exp(-exp(A_log) softplus(x W_a + dt_bias)) and the
                    output gate RMSNorm(o) * silu(x W_g)
  ttt_linear/_mlp   conv4 on q, k (TTT's Mamba backbone); learned W_0; eta = lr_max sigmoid(.);
                    mini-batch GD (chunk = mini-batch) with read-after-write (dual form);
                    per-head RMSNorm * gelu(x W_g)

Each block is pre-norm residual: h = x + Mixer(Norm(x)); y = h + SwiGLU(Norm(h)).

Decoding (the LM body's carry, `init_carry`): every mixer carries its memory state (the engine's
`MemoryState`: S for the linear members, None = TTT's learned W_0 on the first call) and the last
W-1 inputs of each short conv, so a call on the next tokens continues the sequence exactly. The
linear members are per-token recurrences whatever the chunking (decode chunk 1); TTT's mini-batch
is the model, so it decodes in committed chunks of `inner.chunk_size` (`models/decode.py`).

Shape legend: B batch, T time, D width, H heads, K key head dim, V value head dim, E inner width.
"""

from __future__ import annotations

import math
from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from hope_jax.memory.baselines import BASELINES, engine_spec, linear_memory
from hope_jax.memory.delta_chunk import init_linear_state
from hope_jax.memory.rules import gate_bias, squash_gates
from hope_jax.memory.scan import memory_scan
from hope_jax.models.config import ModelConfig
from hope_jax.models.transformer import ffn, norm, out_std
from hope_jax.nn.layers import DenseGeneral, RMSNorm, ShortConv, dtype_of, rope


def _kw(cfg):
    return dict(dtype=dtype_of(cfg.dtype), param_dtype=dtype_of(cfg.param_dtype))


def _f32(cfg):
    return jnp.promote_types(dtype_of(cfg.param_dtype), jnp.float32)


def l2norm(x, eps: float = 1e-6):
    x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return (x32 * jax.lax.rsqrt(jnp.sum(x32 * x32, -1, keepdims=True) + eps)).astype(x.dtype)


def _proj(cfg, x_BTD, name, heads, dim, *, conv=False, act=None, seg=None, axis="heads",
          carry=None, new=None, conv_bias=False):
    """x -> [B, T, heads, dim] through a bias-free projection, optional causal conv and act.

    With a decode `carry`, the conv sees the previous call's last W-1 inputs (and their document
    ids) before this call's, and this call's last W-1 inputs are written into `new["conv"]`.
    """
    y = DenseGeneral((heads * dim,), ("embed",), (axis,), cfg.init_std, name=name,
                     **_kw(cfg))(x_BTD)
    if conv:
        conv_layer = ShortConv(cfg.inner.conv_width, axis, name=f"{name}_conv", bias=conv_bias,
                               **_kw(cfg))
        if carry is None:
            y = conv_layer(y, seg)
        else:
            w = cfg.inner.conv_width - 1
            y = jnp.concatenate([carry["conv"][name].astype(y.dtype), y], 1)
            new["conv"][name] = y[:, y.shape[1] - w:].astype(carry["conv"][name].dtype)
            seg_w = jnp.concatenate([carry["conv_seg"], seg.astype(jnp.int32)], 1)
            y = conv_layer(y, seg_w)[:, w:]
    if act is not None:
        y = act(y)
    return y.reshape(x_BTD.shape[:2] + (heads, dim))


def _gate_logits(cfg, x_BTD, name, heads):
    """Per-head scalar logits [B, T, H] in fp32 (gates are fp32, DESIGN §2)."""
    return DenseGeneral((heads,), ("embed",), ("heads",), cfg.init_std, name=name,
                        dtype=_f32(cfg), param_dtype=dtype_of(cfg.param_dtype))(x_BTD)


def _head_param(mod, name, init, heads, cfg):
    """A per-head vector [H], returned as [1, 1, H] to broadcast against [B, T, H]."""
    p = mod.param(name, nn.with_logical_partitioning(init, ("heads",)), (heads,), _f32(cfg))
    return p[None, None, :]


def _dt_bias_init(key, shape, dtype, lo=1e-3, hi=1e-1):
    """Mamba2 / GDN: softplus(bias) = dt ~ log-uniform in [1e-3, 1e-1]."""
    dt = jnp.exp(jax.random.uniform(key, shape, dtype, math.log(lo), math.log(hi)))
    return dt + jnp.log(-jnp.expm1(-dt))  # inverse softplus


def _a_log_init(key, shape, dtype):
    """A = -exp(A_log) with A ~ U(1, 16) (Mamba2, Gated DeltaNet)."""
    return jnp.log(jax.random.uniform(key, shape, dtype, 1.0, 16.0))


def _chunk_inputs(c: int, t: int, lr_BTH, seg_BT):
    """Pads [B, T, H, ...] inputs to a multiple of the chunk c for the memory engines.

    Returns (bh: pads the time axis and moves heads before it, [B, T, H, ...] -> [B, H, T', ...];
    lr [B, H, T'], zero on the padded tail so padding writes nothing; the document ids padded by
    repeating the last one, or None when `seg_BT` is None). Padding comes after every real token,
    so real outputs and the final state are unchanged."""
    pad = (-t) % c
    tpad = lambda x: jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
    bh = lambda x: jnp.moveaxis(tpad(x), 1, 2)
    lr = jnp.moveaxis(tpad(lr_BTH) * (jnp.arange(t + pad) < t)[None, :, None], 1, 2)
    seg_p = None if seg_BT is None else jnp.pad(seg_BT, ((0, 0), (0, pad)), mode="edge")
    return bh, lr, seg_p


def run_linear_memory(cfg, name, q, k, v, lr, log_a, seg, state=None):
    """Pads T to the chunk, runs the named linear baseline memory, returns ([B, T, H, V] (fp32),
    final `MemoryState`), continuing from `state` (None = zero).

    Inputs are [B, T, H, *]; padded tail tokens write nothing (lr 0, no decay) and come after
    every real token, so real outputs and the final state are unchanged.
    """
    ic, b = cfg.inner, BASELINES[name]
    t = q.shape[1]
    c = min(ic.chunk_size, t) if cfg.baseline.impl == "fast" else ic.chunk_size
    bh, lr, seg_p = _chunk_inputs(c, t, lr, seg if ic.doc_reset else None)
    y, state = linear_memory(b, bh(q), bh(k), bh(v), lr,
                             None if log_a is None else bh(log_a), impl=cfg.baseline.impl,
                             chunk_size=c, segment_ids_BT=seg_p, state=state)
    return jnp.moveaxis(y, 2, 1)[:, :t], state


def _carry_out(carry, new, seg, state):
    """The mixer's new decode carry (None in the parallel forward)."""
    if carry is None:
        return None
    w = new["conv_seg"].shape[1]
    seg_w = jnp.concatenate([new["conv_seg"], seg.astype(jnp.int32)], 1)
    return {**new, "conv_seg": seg_w[:, seg_w.shape[1] - w:], "mem": state}


def _new(carry):
    return None if carry is None else {"conv": dict(carry["conv"]), "conv_seg": carry["conv_seg"]}


def _fresh(cfg, batch, convs: dict, mem):
    """A fresh mixer carry: zero conv tails {name: width} (document id 0 matches no token)."""
    w = cfg.inner.conv_width - 1
    return {"conv": {n: jnp.zeros((batch, w, f), _f32(cfg)) for n, f in convs.items()},
            "conv_seg": jnp.zeros((batch, w), jnp.int32), "mem": mem}


def _zero_mem(cfg, batch, heads, dk, dv):
    return init_linear_state(batch, heads, dk, dv, _f32(cfg))


def _with_carry(y, carry):
    return y if carry is None else (y, carry)


def _out(cfg, y_BTHV, name="o"):
    d = cfg.d_model
    return DenseGeneral((d,), ("heads", "kv"), ("embed",), out_std(cfg), name=name,
                        **_kw(cfg))(y_BTHV.astype(dtype_of(cfg.dtype)))


class LinearAttentionMixer(nn.Module):
    """Linear attention (Katharopoulos et al. 2020): dot objective, no retention, lr 1."""

    cfg: ModelConfig

    @staticmethod
    def init_carry(cfg, batch):
        return _fresh(cfg, batch, {}, _zero_mem(cfg, batch, cfg.num_heads, cfg.head_dim,
                                                cfg.head_dim + 1))

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, carry=None):
        cfg, h, kd = self.cfg, self.cfg.num_heads, self.cfg.head_dim
        mem = None if carry is None else carry["mem"]
        phi = lambda z: nn.elu(z) + 1.0  # positive feature map
        q = _proj(cfg, x_BTD, "q", h, kd, act=phi)
        k = _proj(cfg, x_BTD, "k", h, kd, act=phi)
        v = _proj(cfg, x_BTD, "v", h, kd)
        ones = jnp.ones(v.shape[:-1] + (1,), v.dtype)  # value 1: the normaliser's memory
        lr = jnp.ones(x_BTD.shape[:2] + (h,), _f32(cfg))
        y, mem = run_linear_memory(cfg, "linear_attention", q, k,
                                   jnp.concatenate([v, ones], -1), lr, None, segment_ids_BT, mem)
        y = y[..., :kd] / (y[..., kd:] + 1e-6)
        return _with_carry(_out(cfg, y), _carry_out(carry, _new(carry), segment_ids_BT, mem))


class RetNetMixer(nn.Module):
    """Multi-scale retention (Sun et al. 2023): dot objective, fixed per-head decay."""

    cfg: ModelConfig

    @staticmethod
    def init_carry(cfg, batch):
        vd = int(round(cfg.head_dim * (cfg.baseline.expand_v or 2.0)))
        return _fresh(cfg, batch, {}, _zero_mem(cfg, batch, cfg.num_heads, cfg.head_dim, vd))

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, carry=None):
        cfg, h, kd = self.cfg, self.cfg.num_heads, self.cfg.head_dim
        mem = None if carry is None else carry["mem"]
        vd = int(round(kd * (cfg.baseline.expand_v or 2.0)))
        q = rope(_proj(cfg, x_BTD, "q", h, kd), positions_BT, cfg.rope_theta)
        k = rope(_proj(cfg, x_BTD, "k", h, kd), positions_BT, cfg.rope_theta) * kd**-0.5
        v = _proj(cfg, x_BTD, "v", h, vd)
        log_gamma = jnp.log1p(-(2.0 ** (-5.0 - jnp.arange(h, dtype=_f32(cfg)))))
        log_a = jnp.broadcast_to(log_gamma[None, None, :], x_BTD.shape[:2] + (h,))
        lr = jnp.ones(x_BTD.shape[:2] + (h,), _f32(cfg))
        y, mem = run_linear_memory(cfg, "retnet", q, k, v, lr, log_a, segment_ids_BT, mem)
        y = RMSNorm(cfg.norm_eps, "kv", dtype_of(cfg.param_dtype), name="o_norm")(y)
        g = _proj(cfg, x_BTD, "g", h, vd, act=nn.silu)
        return _with_carry(_out(cfg, y * g.astype(y.dtype)),
                           _carry_out(carry, _new(carry), segment_ids_BT, mem))


class Mamba2Mixer(nn.Module):
    """Mamba2 / SSD (Dao & Gu 2024): dot objective, data-dependent scalar decay exp(dt A)."""

    cfg: ModelConfig

    @staticmethod
    def _dims(cfg):
        h = cfg.num_heads
        e = int(round(cfg.baseline.ssm_expand * cfg.d_model))
        e -= e % h
        return h, e, e // h, cfg.baseline.ssm_state

    @staticmethod
    def init_carry(cfg, batch):
        h, e, p, n = Mamba2Mixer._dims(cfg)
        return _fresh(cfg, batch, {"x": e, "B": n, "C": n}, _zero_mem(cfg, batch, h, n, p))

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, carry=None):
        cfg = self.cfg
        h, e, p, n = self._dims(cfg)
        seg, new = segment_ids_BT, _new(carry)
        mem = None if carry is None else carry["mem"]
        cv = dict(conv=True, act=nn.silu, seg=seg, carry=carry, new=new,
                  conv_bias=cfg.baseline.conv_bias)
        z = _proj(cfg, x_BTD, "z", 1, e, axis="mlp")[:, :, 0]
        xs = _proj(cfg, x_BTD, "x", h, p, axis="mlp", **cv)
        bk = _proj(cfg, x_BTD, "B", 1, n, axis="kv", **cv)
        cq = _proj(cfg, x_BTD, "C", 1, n, axis="kv", **cv)
        dt = jax.nn.softplus(_gate_logits(cfg, x_BTD, "dt", h)
                             + _head_param(self, "dt_bias", _dt_bias_init, h, cfg))
        a = -jnp.exp(_head_param(self, "A_log", _a_log_init, h, cfg))
        bcast = lambda u: jnp.broadcast_to(u, u.shape[:2] + (h, n))  # one group: shared B, C
        y, mem = run_linear_memory(cfg, "mamba2", bcast(cq), bcast(bk), xs, dt, dt * a, seg, mem)
        d_skip = _head_param(self, "D", nn.initializers.ones, h, cfg)
        y = y + d_skip[..., None] * xs.astype(y.dtype)
        y = y.reshape(y.shape[:2] + (e,)) * nn.silu(z.astype(y.dtype))
        y = RMSNorm(cfg.norm_eps, "mlp", dtype_of(cfg.param_dtype), name="o_norm")(y)
        y = DenseGeneral((cfg.d_model,), ("mlp",), ("embed",), out_std(cfg), name="o",
                         **_kw(cfg))(y.astype(dtype_of(cfg.dtype)))
        return _with_carry(y, _carry_out(carry, new, seg, mem))


class DeltaNetMixer(nn.Module):
    """DeltaNet (L2 objective, GD); `gated` adds Gated DeltaNet's data-dependent decay."""

    cfg: ModelConfig
    gated: bool = False

    @staticmethod
    def init_carry(cfg, batch):
        h, kd = cfg.num_heads, cfg.head_dim
        vd = int(round(kd * (cfg.baseline.expand_v or 1.0)))
        return _fresh(cfg, batch, {"q": h * kd, "k": h * kd, "v": h * vd},
                      _zero_mem(cfg, batch, h, kd, vd))

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, carry=None):
        cfg, h, kd = self.cfg, self.cfg.num_heads, self.cfg.head_dim
        vd = int(round(kd * (cfg.baseline.expand_v or 1.0)))
        seg, new = segment_ids_BT, _new(carry)
        mem = None if carry is None else carry["mem"]
        cv = dict(conv=True, act=nn.silu, seg=seg, carry=carry, new=new)
        q = l2norm(_proj(cfg, x_BTD, "q", h, kd, **cv))
        k = l2norm(_proj(cfg, x_BTD, "k", h, kd, **cv))
        v = _proj(cfg, x_BTD, "v", h, vd, **cv)
        beta = jax.nn.sigmoid(_gate_logits(cfg, x_BTD, "beta", h))
        log_a = None
        if self.gated:
            a = jnp.exp(_head_param(self, "A_log", _a_log_init, h, cfg))
            log_a = -a * jax.nn.softplus(_gate_logits(cfg, x_BTD, "alpha", h)
                                         + _head_param(self, "dt_bias", _dt_bias_init, h, cfg))
        name = "gated_deltanet" if self.gated else "deltanet"
        y, mem = run_linear_memory(cfg, name, q, k, v, beta, log_a, seg, mem)
        y = RMSNorm(cfg.norm_eps, "kv", dtype_of(cfg.param_dtype), name="o_norm")(y)
        if self.gated:
            y = y * nn.silu(_proj(cfg, x_BTD, "g", h, vd).astype(y.dtype))
        return _with_carry(_out(cfg, y), _carry_out(carry, new, seg, mem))


class TTTMixer(nn.Module):
    """TTT-Linear / TTT-MLP (Sun et al. 2024): L2 reconstruction, mini-batch GD, learned W_0."""

    cfg: ModelConfig
    mlp: bool = False

    @staticmethod
    def init_carry(cfg, batch):
        hk = cfg.num_heads * cfg.head_dim  # memory None: the learned W_0, made on the first call
        return _fresh(cfg, batch, {"q": hk, "k": hk}, None)

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, carry=None):
        cfg, h, kd = self.cfg, self.cfg.num_heads, self.cfg.head_dim
        mc, ic = cfg.memory, cfg.inner
        b, t, _ = x_BTD.shape
        seg, new = segment_ids_BT, _new(carry)
        q = _proj(cfg, x_BTD, "q", h, kd, conv=True, seg=seg, carry=carry, new=new)
        k = _proj(cfg, x_BTD, "k", h, kd, conv=True, seg=seg, carry=carry, new=new)
        v = _proj(cfg, x_BTD, "v", h, kd)
        bias = _head_param(self, "lr_bias", nn.initializers.constant(
            gate_bias("lr", ic.lr_init, ic.lr_max)), h, cfg)
        lr = squash_gates({"lr": _gate_logits(cfg, x_BTD, "lr_gate", h) + bias}, ic.lr_max)["lr"]
        spec = engine_spec(BASELINES["ttt_mlp" if self.mlp else "ttt_linear"], kd, kd,
                           ic.chunk_size, mc.hidden_mult, ic.remat_every)
        arch = spec.arch

        def init_mem(key, i):
            return jax.vmap(lambda kk: arch.init(kk, _f32(cfg)))(jax.random.split(key, h))[i]

        w0 = tuple(self.param(f"mem_w{i}", nn.with_logical_partitioning(
            lambda key, shape, dtype, i=i: init_mem(key, i), ("heads", None, None)),
            (h,) + s, _f32(cfg)) for i, s in enumerate(arch.shapes()))
        c = spec.chunk_size
        bh, lr, seg_p = _chunk_inputs(c, t, lr, seg if ic.doc_reset else None)
        y, mem = memory_scan(spec, w0, bh(q), bh(k), bh(v), {"lr": lr},
                             segment_ids_BT=seg_p, state=None if carry is None else carry["mem"])
        y = jnp.moveaxis(y, 2, 1)[:, :t]
        y = RMSNorm(cfg.norm_eps, "kv", dtype_of(cfg.param_dtype), name="o_norm")(y)
        y = y * nn.gelu(_proj(cfg, x_BTD, "g", h, kd).astype(y.dtype))
        return _with_carry(_out(cfg, y), _carry_out(carry, new, seg, mem))


class MixerBlock(nn.Module):
    """h = x + Mixer(Norm(x)); y = h + SwiGLU(Norm(h)) with the subclass' `mixer`."""

    cfg: ModelConfig
    mixer: ClassVar = None
    mixer_kw: ClassVar = {}

    @classmethod
    def init_carry(cls, cfg: ModelConfig, batch: int, max_len: int) -> dict:
        """The mixer's fresh decode carry (memory state, conv tails); no KV cache."""
        return {"mixer": cls.mixer.init_carry(cfg, batch)}

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, carry=None):
        cfg = self.cfg
        mixer = self.mixer(cfg, name="mixer", **self.mixer_kw)
        xn = norm(cfg, "mix_norm")(x_BTD)
        if carry is None:
            h = x_BTD + mixer(xn, positions_BT, segment_ids_BT)
            return h + ffn(cfg)(norm(cfg, "mlp_norm")(h))
        y, state = mixer(xn, positions_BT, segment_ids_BT, carry["mixer"])
        h = x_BTD + y
        return h + ffn(cfg)(norm(cfg, "mlp_norm")(h)), {"mixer": state}


def _block(name, mixer, **kw):
    return type(name, (MixerBlock,), {"mixer": mixer, "mixer_kw": kw, "__module__": __name__})


LinearAttentionBlock = _block("LinearAttentionBlock", LinearAttentionMixer)
RetNetBlock = _block("RetNetBlock", RetNetMixer)
Mamba2Block = _block("Mamba2Block", Mamba2Mixer)
DeltaNetBlock = _block("DeltaNetBlock", DeltaNetMixer)
GatedDeltaNetBlock = _block("GatedDeltaNetBlock", DeltaNetMixer, gated=True)
TTTLinearBlock = _block("TTTLinearBlock", TTTMixer)
TTTMLPBlock = _block("TTTMLPBlock", TTTMixer, mlp=True)

BASELINE_MODELS = {
    "linear_attention": LinearAttentionBlock, "retnet": RetNetBlock, "mamba2": Mamba2Block,
    "deltanet": DeltaNetBlock, "gated_deltanet": GatedDeltaNetBlock,
    "ttt_linear": TTTLinearBlock, "ttt_mlp": TTTMLPBlock,
}
