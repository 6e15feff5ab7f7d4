"""Self-modifying (self-referential) Titans: the HOPE sequence mixer (SPEC §4.3-4.4, Eqs. 83-93).

Per head and per sequence (vmap over B and H), residual 2-layer MLP memories (Eq. 89)
M_k, M_v, M_eta, M_alpha (and M_q with `adaptive_q`, A8) generate the inputs of the main memory
M_mem, and every memory updates itself in context:

  x_t^(m) = silu(conv(x_t W_m))   per-memory input map D -> H x K + causal conv (A16, Titans §4.4)
  k_t = l2n(M_k(x^k))  v_t = M_v(x^v)  q_t = l2n(x^q)      (Eq. 83/86; q fixed, A8)
  eta_t = lr_max sigmoid(w_eta . M_eta(x^eta) + b)  alpha_t = sigmoid(-(w_a . M_alpha(x^a) + b))
  beta_t = sigmoid(x_t w_beta + b)   (momentum gate, static, A6; gates per head, fp32, A7)
  v^_m,t = M_m(v_t)                (each memory's own target, Eq. 87; constant inside grad, A15)
  W_0 <- (alpha I - eta' k k^T) W_0 + S_0, W_1 <- alpha W_1 + S_1, S <- beta S - eta' grad
                                   (Eq. 88 + DGD A9 + momentum A6, row-vector convention A11;
                                    eta' = eta/(1+eta) by default: `optimizers.dgd_coefficient`)
  y_t = M_mem(q_t) -> RMSNorm per head * sigmoid(x W_g) -> out projection (Titans §4.4).

Everything a token reads (its k, v, q, gates, targets, gradients, output) uses the memories'
state at the END of the previous chunk (A1): chunk `other_chunk_size` for the k/v/eta/alpha(/q)
memories, `chunk_size` for M_mem. So the layer is two `chunked_scan`s: the first produces
k, v, q, eta, alpha for all tokens, the second runs M_mem on them. The adaptive memories are
stacked on an axis M and vmapped (one graph for all). Every memory writes through the engine's
one per-chunk primitive `scan.chunk_update` with the spec's objective and optimizer: DGD's own
closed form (`dgd_chunk`: matmuls and one C x C unit-triangular inverse shared by the memories),
GD's affine closed form, or a scan of any other rule's `step` (`inner.closed_form=False`: always
the step). All are tested against the token-by-token `self_modifying_reference`, which calls
the optimizer's `step` and the objective.

Choices (ours): every adaptive memory has its own input map W_m (a shared x_t is the special case
W_m all equal, `hope.shared_input`; separate maps keep k != v at init, where every memory is
~identity, A15, and make self_modify=False exactly the Titans layer); with self_modify=False
every projection is static and M_mem's target is v_t (= `NeuralMemory`), otherwise M_mem's
target is M_mem(v_t) (Eq. 87).

Shape legend: B batch, T time, D width, H heads, K head dim, F memory hidden, C chunk, W conv.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from hope_jax.memory import frame
from hope_jax.memory.config import InnerConfig
from hope_jax.memory.hope_config import HopeConfig
from hope_jax.memory.optimizers import make_inner_optimizer
from hope_jax.memory.rules import gate_bias, get_objective, make_arch, squash_gates
from hope_jax.memory.scan import MemorySpec, chunk_update, chunked_scan
from hope_jax.memory.scan import read as read_chunk
from hope_jax.nn.layers import dtype_of

_VECS = ("q", "k", "v")
_ACT = "gelu"  # sigma of Eq. 89 (unspecified in the paper; engine default)


@dataclasses.dataclass(frozen=True)
class SelfModSpec:
    """Static description of the layer's inner loop: the engine's spec plus HOPE's own.

    Attributes:
      mem: the engine spec shared by every memory (`scan.MemorySpec`: arch = residual 2-layer
        MLP of Eq. 89, objective, optimizer, chunk_size of M_mem, remat, closed_form).
      other_chunk_size: chunk of the other memories (A1, A2).
      adaptive: which of q, k, v, lr (eta), retain (alpha) come from in-context memories.
      self_target: M_mem's target is M_mem(v_t) (Eq. 87) instead of v_t (Titans).
      lr_max: eta_t <= lr_max (A9).
      shared_input: every adaptive memory reads the one input x_in (PAPER.md D9).
    """

    mem: MemorySpec
    other_chunk_size: int
    adaptive: tuple[str, ...]
    self_target: bool
    lr_max: float
    shared_input: bool = False

    @property
    def gates(self) -> tuple[str, ...]:
        """The gates the optimizer reads (lr, momentum, retain)."""
        return self.mem.optimizer.gates


def layer_spec(hc: HopeConfig, ic: InnerConfig, head_dim: int) -> SelfModSpec:
    """The inner-loop description of the layer `hc` with inner loop `ic` (resolved, see
    `ModelConfig`) for heads of width `head_dim`."""
    opt = make_inner_optimizer(ic.optimizer, ic.momentum, ic.retention)
    adaptive: tuple[str, ...] = ()
    if hc.self_modify:
        names = ["q"] if hc.adaptive_q else []
        names += ["k", "v", "lr"] + (["retain"] if "retain" in opt.gates else [])
        adaptive = tuple(n for n in names if n != hc.static_proj)
    arch = make_arch("mlp", head_dim, head_dim, 2, hc.memory_hidden_mult, _ACT, True,
                     ic.out_norm, ic.out_gain, ic.grad_clip)
    mem = MemorySpec(arch, get_objective(ic.objective), opt, ic.chunk_size,
                     remat_every=ic.remat_every, closed_form=ic.closed_form)
    return SelfModSpec(mem, hc.other_chunk_size or ic.chunk_size, adaptive, hc.self_modify,
                       ic.lr_max, hc.shared_input and bool(adaptive))


def _finish(spec: SelfModSpec, vecs: dict, logits: dict) -> dict:
    """q, k l2-normalised (SPEC §4.3), gates squashed to their ranges in the state dtype (A7)."""
    return {"q": frame.l2norm(vecs["q"]), "k": frame.l2norm(vecs["k"]), "v": vecs["v"],
            "gates": squash_gates(logits, spec.lr_max)}


# --------------------------------------------------------------------------------------------
# One chunk, one (sequence, head)
# --------------------------------------------------------------------------------------------


def _after(reset_C):
    """Tokens at or after a document start inside this chunk (they use the initial weights)."""
    return None if reset_C is None else jnp.cumsum(reset_C.astype(jnp.int32)) > 0


def _write(spec, init_w, w, s, q_CK, k_CK, v_CK, gates_C, reset_C, valid_C, self_target):
    """One chunk of inner updates of one memory through the engine's `chunk_update` (Eq. 88 +
    the optimizer's rule); the target is M(W_ref; v) (Eq. 87) with `self_target`, else v."""
    target = (lambda wr: spec.mem.arch.apply(wr, v_CK)) if self_target else None
    return chunk_update(spec.mem, init_w, w, s, q_CK, k_CK, v_CK, gates_C, reset_C, valid_C,
                        target)


def _aux_chunk(spec, consts, fast, xc, reset_C, valid_C):
    """k/v/eta/alpha(/q) memories, stacked on axis M and vmapped: generate this chunk's inputs
    of M_mem at the chunk-start states (Eq. 83/86, A1), then self-update (Eq. 87-88)."""
    init_M, after = consts["init"], _after(reset_C)
    (w_M, s_M), arch = fast, spec.mem.arch
    read = jax.vmap(lambda i, w, x: read_chunk(arch, i, w, x, after), (0, 0, 1))
    out_MCK = read(init_M, w_M, xc["x"])
    out = {n: out_MCK[m] for m, n in enumerate(spec.adaptive)}
    vecs = {n: out.get(n, xc.get(n)) for n in _VECS}  # adaptive M_n(x^n) or static x W_n
    logits = dict(xc["logits"])
    for n, (w_K, b) in consts["read"].items():  # per-head scalar gate from M_eta / M_alpha (A7)
        logits[n] = out[n] @ w_K + b
    f = _finish(spec, vecs, logits)
    write = lambda i, w, s: _write(spec, i, w, s, None, f["k"], f["v"], f["gates"], reset_C,
                                   valid_C, True)[:2]
    return jax.vmap(write)(init_M, w_M, s_M), f


def _main_chunk(spec, consts, fast, xc, reset_C, valid_C):
    """M_mem: y_t = M_mem(W_{c-1}; q_t) (Eq. 83, A1), then the chunk's writes (Eq. 88)."""
    w, s, y = _write(spec, consts, fast[0], fast[1], xc["q"], xc["k"], xc["v"], xc["gates"],
                     reset_C, valid_C, spec.self_target)
    return (w, s), y


def _run(spec, chunk_fn, consts, fast, xs, chunk):
    """`chunked_scan` over chunks of `chunk_fn`, vmapped over (B, H). With document ids every
    chunk takes the reset-aware path (no `lax.cond`: packed rows put a boundary in most chunks
    of a batch anyway, and one branch halves the compile)."""

    def body(fast_, xc):
        def f(cst, fst, x):
            return chunk_fn(spec, cst, fst, x, x.get("reset"), x.get("valid"))

        return jax.vmap(jax.vmap(f, (0, 0, 0)), (None, 0, 0))(consts, fast_, xc)

    return chunked_scan(body, fast, xs, chunk_size=chunk, axis=2,
                        remat_every=spec.mem.remat_every)


def self_modifying_scan(spec: SelfModSpec, consts: dict, xs: dict, fast: dict, *,
                        reset_BT=None, valid_T=None):
    """The chunk-parallel inner loop of the layer (both scans), in the state dtype.

    M = len(spec.adaptive) stacked adaptive memories, in the order of `spec.adaptive`.

    Args:
      spec: static description (`layer_spec`).
      consts: {"init": {"aux": params [H, M, ...] (if M), "mem": params [H, ...]} initial
        weights; "read": {"lr"/"retain": (w_HK, b_H)} gate read-outs of M_eta / M_alpha}.
      xs: {"x": x_BHTMK inputs of the adaptive memories (if M), "q"/"k"/"v": static x_BHTK of
        the others (before l2-norm), "logits": {gate: BHT} static gate logits}.
      fast: {"aux": (params, opt_state) leaves [B, H, M, ...] (if M), "mem": (params,
        opt_state) leaves [B, H, ...]}: the state at the start.
      reset_BT: document start per token (state -> initial weights there), or None.
      valid_T: False for padding tokens at the end (no write), or None.

    Returns:
      (y_BHTK retrieved values, new fast state).
    """
    b, h, t = (xs["x"] if "x" in xs else xs["q"]).shape[:3]
    bc = lambda z: jnp.broadcast_to(z, (b, h, t))
    extra = {} if valid_T is None else {"valid": bc(valid_T)}
    if reset_BT is not None:
        extra["reset"] = bc(reset_BT[:, None, :])
    fast = dict(fast)
    if spec.adaptive:
        cst = {"init": consts["init"]["aux"], "read": consts["read"]}
        xs_aux = {k: v for k, v in xs.items() if k in ("x", "logits") + _VECS}
        fast["aux"], f = _run(spec, _aux_chunk, cst, fast["aux"], {**xs_aux, **extra},
                              spec.other_chunk_size)
    else:
        f = _finish(spec, {n: xs[n] for n in _VECS}, xs["logits"])
    fast["mem"], y = _run(spec, _main_chunk, consts["init"]["mem"], fast["mem"], {**f, **extra},
                          spec.mem.chunk_size)
    return y, fast


def _conv_names(spec: SelfModSpec) -> list[str]:
    """The causal convs of the layer: q, k, v and the adaptive gates' inputs, or with a shared
    input the static projections and the one input map x_in of every adaptive memory."""
    if spec.shared_input:
        return [n for n in _VECS if n not in spec.adaptive] + ["x_in"]
    return list(_VECS) + [f"{n}_in" for n in ("lr", "retain") if n in spec.adaptive]


# --------------------------------------------------------------------------------------------
# The Linen layer
# --------------------------------------------------------------------------------------------


class SelfModifyingTitans(nn.Module):
    """Self-modifying Titans sequence mixer: [B, T, D] -> [B, T, D], strictly causal (A1).

    `state` (None = fresh) and the returned state are dicts with leaves of leading dim B:
      fast:     {"mem": (params, opt_state)} main memory: params (W_0 [B,H,K,F], W_1 [B,H,F,K]),
                opt_state ((S_0, S_1),) with momentum, else (); "aux": the same for the M
                adaptive memories stacked on axis 2 ([B,H,M,K,F], ...) in `layer_spec(...).adaptive`
                order (absent with self_modify=False);
      conv:     {proj name: [B, W-1, H*K]} last inputs of each causal conv;
      conv_seg: [B, W-1] their document ids;  prev_seg: [B] document id of the last token.
    Fast state and conv tails are in the state dtype (>= fp32). Splitting a sequence into calls
    whose lengths are multiples of both chunk sizes gives exactly the one-pass result; a shorter
    tail is padded (padding never writes), and the next call starts a new chunk there.

    Attributes:
      num_heads, head_dim: memory heads (each has its own fast memories).
      hope: the layer's section (`model.hope`); inner: its inner loop (`model.inner`, resolved).
      init_std / out_std: projection init scales (out_std default init_std); dtype /
        param_dtype: compute and param dtype names.
      inner_reference: run the slow token-by-token reference of the inner loop
        (`self_modifying_reference`, tests) instead of the chunk-parallel scan.
    """

    num_heads: int
    head_dim: int
    hope: HopeConfig
    inner: InnerConfig
    init_std: float = 0.02
    out_std: float | None = None
    dtype: str = "float32"
    param_dtype: str = "float32"
    inner_reference: bool = False

    def _mem_init(self, prefix, arch, h):
        def init(key, shape, dtype, i):
            return jax.vmap(lambda kk: arch.init(kk, dtype)[i])(jax.random.split(key, h))

        return tuple(self.param(f"{prefix}mem_w{i}", nn.with_logical_partitioning(
            lambda key, shape, dtype, i=i: init(key, shape, dtype, i),
            ("heads", "kv", None) if i == 0 else ("heads", None, "kv")),
            (h,) + s, dtype_of(self.param_dtype)) for i, s in enumerate(arch.shapes()))

    def init_state(self, batch: int) -> dict:
        """A fresh state for `batch` rows, without params (pure: `frame.zero_state`)."""
        cfg = self
        spec = layer_spec(self.hope, self.inner, self.head_dim)
        shapes = {"mem": tuple((cfg.num_heads,) + s for s in spec.mem.arch.shapes())}
        if spec.adaptive:
            m = len(spec.adaptive)
            shapes["aux"] = tuple((cfg.num_heads, m) + s for s in spec.mem.arch.shapes())
        sdt = jnp.promote_types(dtype_of(cfg.dtype), jnp.float32)
        return frame.zero_state(shapes, spec.mem.optimizer.init, batch, _conv_names(spec),
                          cfg.inner.conv_width, cfg.num_heads * cfg.head_dim, sdt)

    @nn.compact
    def __call__(self, x_BTD, positions_BT, segment_ids_BT, state=None):
        del positions_BT  # position-free: order enters through the recurrence and the convs
        cfg, ic = self, self.inner
        h, kd, seg = cfg.num_heads, cfg.head_dim, segment_ids_BT
        b, t, d = x_BTD.shape
        cdt = dtype_of(cfg.dtype)
        sdt = jnp.promote_types(cdt, jnp.float32)  # fast state, gates, norms (SPEC §7.1)
        kw = dict(dtype=cdt, param_dtype=dtype_of(cfg.param_dtype))
        spec = layer_spec(self.hope, self.inner, kd)
        cast = lambda tree: jax.tree_util.tree_map(lambda a: a.astype(sdt), tree)
        init = {"mem": cast(self._mem_init("", spec.mem.arch, h))}
        if spec.adaptive:  # stacked on axis M after H, in the order of spec.adaptive
            per = [cast(self._mem_init(f"{n}_", spec.mem.arch, h)) for n in spec.adaptive]
            init["aux"] = jax.tree_util.tree_map(lambda *w: jnp.stack(w, 1), *per)
        convs = _conv_names(spec)
        if state is None:
            state = frame.fresh_state(init, spec.mem.optimizer.init, b, convs, ic.conv_width,
                                      h * kd, sdt, seg)
        state = frame.begin(state, init, spec.mem.optimizer.init, sdt)
        seg_c = frame.conv_segments(state, seg)
        new_conv = {}

        def proj_conv(name):  # silu(conv(x W)) per head (Titans §4.4, A16); conv tail carried
            y, new_conv[name] = frame.proj_conv(x_BTD, name, h, kd, ic.conv_width,
                                                state["conv"][name], seg_c, cfg.init_std, kw)
            return y

        to_bh = lambda z: jnp.moveaxis(z, 1, 2).astype(sdt)  # [B, T, H, ...] -> [B, H, T, ...]
        shared = to_bh(proj_conv("x_in")) if spec.shared_input else None
        mem_input = lambda name: to_bh(proj_conv(name)) if shared is None else shared
        xs = {"x": {}, "logits": {}}
        for n in _VECS:  # memory input x^n (adaptive) or the static projection itself
            if n in spec.adaptive:
                xs["x"][n] = mem_input(n)
            else:
                xs[n] = to_bh(proj_conv(n))
        read = {}
        for n in spec.gates:
            # gate values at init (ours): eta, beta (momentum), 1 - alpha (retain)
            init_v = {"lr": ic.lr_init, "momentum": ic.momentum_init,
                      "retain": 1.0 - ic.forget_init}[n]
            bias_v = gate_bias(n, init_v, ic.lr_max)
            if n in spec.adaptive:  # logit = w . M_n(x^n) + b per head (A7)
                bias = frame.gate_bias_param(self, n, h, bias_v, kw["param_dtype"])
                xs["x"][n] = mem_input(f"{n}_in")
                w = self.param(f"{n}_read", nn.with_logical_partitioning(
                    nn.initializers.normal(cfg.init_std), ("heads", "kv")), (h, kd), kw[
                    "param_dtype"])
                read[n] = (w.astype(sdt), bias.astype(sdt))
            else:  # static gate x W + b (Titans), fp32 or wider
                lg = frame.static_gate(self, x_BTD, n, h, bias_v, kw["param_dtype"], sdt,
                                 kw["param_dtype"], cfg.init_std)
                xs["logits"][n] = jnp.moveaxis(lg, 1, 2)

        # padded tail tokens read but never write (valid = False)
        lcm = math.lcm(spec.mem.chunk_size, spec.other_chunk_size)
        xs, valid = frame.pad_to_chunk(xs, lcm, 2, t)
        reset = None
        if seg is not None and ic.doc_reset:  # A4/A17: fresh memories per document
            last = jnp.where(state["prev_seg"] < 0, seg[:, 0], state["prev_seg"])  # fresh: begin
            prev = jnp.concatenate([last[:, None].astype(seg.dtype), seg[:, :-1]], 1)
            reset, _ = frame.pad_to_chunk(seg != prev, lcm, 1, t)
        if spec.adaptive:
            xs["x"] = jnp.stack([xs["x"][n] for n in spec.adaptive], 3)  # [B, H, T, M, K]
        else:
            del xs["x"]
        scan = self_modifying_scan
        if self.inner_reference:
            from hope_jax.memory.self_modifying_reference import reference_scan as scan
        y, fast = scan(spec, {"init": init, "read": read}, xs, cast(state["fast"]),
                       reset_BT=reset, valid_T=valid)
        y = jnp.moveaxis(y, 2, 1)[:, :t]  # [B, T, H, K]
        y = frame.output(x_BTD, y, d, cfg.init_std, self.out_std or cfg.init_std, sdt, kw)
        return y, frame.end_state(state, fast, new_conv, seg, seg_c, ic.conv_width)
