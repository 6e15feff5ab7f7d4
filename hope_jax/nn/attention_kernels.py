"""Fused attention kernels behind `model.attn_impl`: cuDNN flash attention on GPU, Pallas splash
attention on TPU, and `jax.nn.dot_product_attention`'s XLA form (the same call as cuDNN's, run by
XLA: what the CPU tests compare with our own path).

The mask is always the one of `attention.causal_mask` for self-attention over a packed row: key s
is visible from query t iff s <= t, t - s < window (when window > 0) and both are in the same
document (segment id). Padding (segment 0) attends to padding, so no row is fully masked.

`attn_impl`:
  xla          our einsum + fp32 softmax (`attention.attend`), with the query-blocked path
               (`model.attn_q_block`); the only path for decoding with a KV cache.
  dot_product  `jax.nn.dot_product_attention(implementation="xla")`, causal + window + document
               mask (materializes [B, H, T, T] logits like `xla`; for checking the kernels).
  cudnn        the same call with implementation="cudnn": the causal / window part is never
               computed; documents are a [B, 1, T, T] mask (turned into a bias by JAX, so memory
               keeps a T^2 term per row, not per head). Needs an Ampere+ GPU and bfloat16 /
               float16 (`model.dtype`); see `resolve_impl`.
  splash       `jax.experimental.pallas.ops.tpu.splash_attention` (imported only when used):
               causal / local mask blocks skipped, document masking by segment ids, GQA by the
               MQA kernel per kv head group. Needs a TPU and T a multiple of 128. Under a
               device mesh (`sharding.mesh_context`) it runs in `shard_map` (a Mosaic kernel is
               not partitioned by XLA): batch split over (data, fsdp), heads over tensor.
  auto         cudnn on GPU when the device, dtype and shapes allow it, splash on TPU when
               T % 128 == 0, else xla.
A fused kernel replaces the query-blocked path (it never holds [T, T] logits anyway).

Shape legend: B batch, T time, H query heads, G kv heads, K head dim.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

__all__ = ["ATTN_IMPLS", "fused_attention", "resolve_impl"]

ATTN_IMPLS = ("auto", "xla", "dot_product", "cudnn", "splash")
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)


def _gpu_capability() -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in jax.devices()[0].compute_capability.split("."))
    except (AttributeError, ValueError):
        return (0,)


def resolve_impl(impl: str, dtype, head_dim: int, seq_len: int, backend: str | None = None,
                 gpu_capability: tuple[int, ...] | None = None) -> str:
    """The kernel `impl` means here: "auto" picks per backend; ValueError if `impl` cannot run.

    cuDNN flash attention (as JAX calls it, with the document mask as a bias) needs an Ampere or
    newer GPU (compute capability >= 8.0), bfloat16 / float16, a head dim <= 128 divisible by 8
    and an even sequence length; splash needs a TPU and T % 128 == 0.
    `backend` / `gpu_capability` default to those of the first device.
    """
    backend = backend or jax.default_backend()
    if backend == "gpu" and gpu_capability is None:
        gpu_capability = _gpu_capability()
    cudnn_ok = (backend == "gpu" and gpu_capability >= (8, 0) and head_dim % 8 == 0
                and jnp.dtype(dtype) in _CUDNN_DTYPES and head_dim <= 128 and seq_len % 2 == 0)
    if impl == "auto":
        if cudnn_ok:
            return "cudnn"
        if backend == "tpu" and seq_len % 128 == 0:
            return "splash"
        return "xla"
    if impl not in ATTN_IMPLS:
        raise ValueError(f"model.attn_impl={impl!r}; choose from {ATTN_IMPLS}")
    if impl == "cudnn" and not cudnn_ok:
        raise ValueError(
            f"model.attn_impl='cudnn' needs an Ampere+ GPU, bfloat16/float16, a head dim <= 128 "
            f"divisible by 8 and an even length (got {backend} {gpu_capability or ''}, "
            f"{jnp.dtype(dtype).name}, head dim {head_dim}, T={seq_len})")
    if impl == "splash" and (backend != "tpu" or seq_len % 128):
        raise ValueError(f"model.attn_impl='splash' needs a TPU and a sequence length divisible "
                         f"by 128 (got {backend}, T={seq_len})")
    return impl


def _dot_product(q_BTHK, k_BTGK, v_BTGK, seg_BT, window: int, implementation: str):
    same_doc_B1TT = seg_BT[:, None, :, None] == seg_BT[:, None, None, :]
    return jax.nn.dot_product_attention(
        q_BTHK, k_BTGK, v_BTGK, mask=same_doc_B1TT, is_causal=True,
        local_window_size=(window - 1, 0) if window else None, implementation=implementation)


def _splash(q_BTHK, k_BTGK, v_BTGK, seg_BT, window: int, interpret: bool = False):
    from jax.experimental.pallas.ops.tpu import splash_attention as sa

    b, t, h, k = q_BTHK.shape
    g = k_BTGK.shape[2]
    block = next(s for s in (512, 256, 128, t) if t % s == 0)
    one = (sa.LocalMask((t, t), (window - 1, 0), 0) if window and window < t
           else sa.CausalMask((t, t)))
    sizes = sa.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                          block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                          block_q_dq=block, block_kv_dq=block)
    kernel = sa.make_splash_mqa(sa.MultiHeadMask([one] * (h // g)), block_sizes=sizes,
                                head_shards=1, q_seq_shards=1, interpret=interpret)
    # query head i reads kv head i // (h // g), as `attend`'s jnp.repeat
    q_BGNTK = jnp.moveaxis(q_BTHK.reshape(b, t, g, h // g, k), 1, 3) * k ** -0.5
    k_BGTK, v_BGTK = (jnp.moveaxis(x, 1, 2) for x in (k_BTGK, v_BTGK))

    def per_row(q_GNTK, k_GTK, v_GTK, seg_T):
        ids = sa.SegmentIds(q=seg_T, kv=seg_T)
        return jax.vmap(lambda q, kk, vv: kernel(q, kk, vv, segment_ids=ids))(q_GNTK, k_GTK, v_GTK)

    o_BGNTK = jax.vmap(per_row)(q_BGNTK, k_BGTK, v_BGTK, seg_BT.astype(jnp.int32))
    return jnp.moveaxis(o_BGNTK, 3, 1).reshape(b, t, h, k).astype(v_BTGK.dtype)


def _per_shard(fn, q_BTHK, k_BTGK, v_BTGK, seg_BT):
    """`fn(q, k, v, seg)` under the context mesh, if any, in shard_map: rows split over the
    (data, fsdp) axes and kv-head groups over tensor where they divide, else replicated."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return fn(q_BTHK, k_BTGK, v_BTGK, seg_BT)
    sizes = dict(zip(mesh.axis_names, mesh.axis_sizes))
    rows = tuple(a for a in ("data", "fsdp") if sizes.get(a, 1) > 1)
    if q_BTHK.shape[0] % math.prod(sizes[a] for a in rows):
        rows = ()
    tp = sizes.get("tensor", 1)
    heads = "tensor" if tp > 1 and k_BTGK.shape[2] % tp == 0 else None
    x = P(rows or None, None, heads, None)
    return jax.shard_map(fn, in_specs=(x, x, x, P(rows or None, None)), out_specs=x,
                         check_vma=False)(q_BTHK, k_BTGK, v_BTGK, seg_BT)


def fused_attention(q_BTHK, k_BTGK, v_BTGK, seg_BT, window: int, impl: str, *,
                    interpret: bool = False):
    """Causal self-attention over packed rows with the kernel `impl` resolves to (not "xla").

    Args:
      q_BTHK, k_BTGK, v_BTGK: RoPE'd queries, keys, values (GQA: H a multiple of G).
      seg_BT: int segment (document) ids; window: sliding window, 0 = full causal.
      impl: an `ATTN_IMPLS` name; interpret: run the splash kernel in Pallas interpret mode
        (tests on CPU).
    """
    b, t, h, k = q_BTHK.shape
    kind = "splash" if interpret else resolve_impl(impl, q_BTHK.dtype, k, t)
    if kind == "splash":
        splash = lambda q, k, v, seg: _splash(q, k, v, seg, window, interpret)  # noqa: E731
        return _per_shard(splash, q_BTHK, k_BTGK, v_BTGK, seg_BT)
    if kind in ("dot_product", "cudnn"):
        return _dot_product(q_BTHK, k_BTGK, v_BTGK, seg_BT, window,
                            "xla" if kind == "dot_product" else "cudnn")
    raise ValueError(f"attn_impl {impl!r} resolves to {kind!r}: use attention.attend")
