"""Typed configuration schema and validation.

Experiments are written as `configs/<name>.py` files whose `get_config()` returns an
`ml_collections.ConfigDict`; command-line overrides (`--config.model.d_model=512`) are applied to
that dict by absl. Before anything runs, `validate()` turns the dict into the frozen dataclasses
below, so that an unknown key, a value of the wrong type, or an impossible combination (heads not
dividing the width, ...) fails at once with one line naming the key.

Each section is a dataclass; each field's `metadata` may carry `choices` (allowed values) and
`positive` / `nonneg` flags. Cross-field rules live in each section's `check()`.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

from hope_jax.config_fields import ConfigError, field
from hope_jax.memory.baseline_config import BaselineConfig
from hope_jax.memory.config import MemoryConfig
from hope_jax.memory.hope_config import HopeConfig

__all__ = ["Config", "ConfigError", "DataConfig", "MeshConfig", "ModelConfig", "OptimConfig",
           "TrainConfig",
           "default_config_dict", "replace", "validate"]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The network. `name` picks a model from `hope_jax.models.lm.MODELS`."""

    name: str = field("transformer", help="model registry key (see hope_jax.models.lm.MODELS)")
    vocab_size: int = field(257, positive=True, help="output vocabulary; >= tokenizer vocab")
    d_model: int = field(256, positive=True)
    num_layers: int = field(4, positive=True)
    num_heads: int = field(4, positive=True)
    num_kv_heads: int = field(0, nonneg=True, help="grouped-query attention; 0 = num_heads")
    mlp_hidden: int = field(0, nonneg=True, help="SwiGLU hidden width; 0 = 8/3*d_model rounded")
    mlp_multiple_of: int = field(64, positive=True)
    rope_theta: float = field(10000.0, positive=True)
    tie_embeddings: bool = field(True)
    dtype: str = field("float32", choices=("float32", "bfloat16", "float16", "float64"),
                    help="compute dtype of matmuls; params stay in param_dtype")
    param_dtype: str = field("float32", choices=("float32", "float64"))
    norm_eps: float = field(1e-6, positive=True)
    init_std: float = field(0.02, positive=True)
    scan_layers: bool = field(True, help="stack blocks with nn.scan (one compiled block)")
    remat: str = field("none", choices=("none", "block"), help="rematerialize each block")
    attn_window: int = field(0, nonneg=True, help="sliding-window size for attention; 0 = full")
    attn_q_block: int = field(0, nonneg=True,
                              help="attention logits this many queries at a time, recomputed in "
                                   "backward (memory O(block x T), not O(T^2)); 0 = full")
    attn_impl: str = field("auto", choices=("auto", "xla", "dot_product", "cudnn", "splash"),
                           help="attention kernel (nn/attention_kernels.py); auto = cudnn on GPU "
                                "(bf16/fp16), splash on TPU, else xla")
    memory: MemoryConfig = dataclasses.field(default_factory=MemoryConfig)
    hope: HopeConfig = dataclasses.field(default_factory=HopeConfig)
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def kv_heads(self) -> int:
        return self.num_kv_heads or self.num_heads

    @property
    def hidden(self) -> int:
        if self.mlp_hidden:
            return self.mlp_hidden
        h = int(8 * self.d_model / 3)
        m = self.mlp_multiple_of
        return m * ((h + m - 1) // m)

    def check(self, path: str) -> None:
        from hope_jax.models.lm import MODELS  # late import: models import this module

        if self.name not in MODELS:
            raise ConfigError(f"{path}.name={self.name!r} is not a model; known: {sorted(MODELS)}")
        if self.d_model % self.num_heads:
            raise ConfigError(
                f"{path}.num_heads={self.num_heads} must divide {path}.d_model={self.d_model}"
            )
        if self.head_dim % 2:
            raise ConfigError(f"head dim d_model/num_heads={self.head_dim} must be even for RoPE")
        if self.num_heads % self.kv_heads:
            raise ConfigError(
                f"{path}.num_kv_heads={self.kv_heads} must divide {path}.num_heads={self.num_heads}"
            )
        if self.attn_impl == "cudnn" and self.dtype not in ("bfloat16", "float16"):
            raise ConfigError(f"{path}.attn_impl='cudnn' needs {path}.dtype bfloat16 or float16")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where text comes from and how it becomes fixed-length token sequences."""

    source: str = field("stdlib", choices=("stdlib", "files"),
                     help="stdlib = embedded Python-stdlib corpus; files = train_paths")
    train_paths: tuple[str, ...] = field(
        (), help="files or directories: UTF-8 text (any name), .jsonl, .parquet, .arrayrecord; "
                 "gzip/zstd read transparently")
    val_paths: tuple[str, ...] = field((), help="validation files; empty = hold out val_fraction")
    val_fraction: float = field(0.02, nonneg=True,
                                help="share of documents held out for validation")
    format: str = field("auto", choices=("auto", "text", "jsonl", "parquet", "arrayrecord"),
                        help="auto = by name (.jsonl .parquet .arrayrecord; else text)")
    text_field: str = field("text", help="field holding the text in jsonl/parquet records")
    tokenizer: str = field("byte", choices=("byte", "hf", "sentencepiece"))
    tokenizer_path: str = field("", help="tokenizer.json (hf) or .model (sentencepiece)")
    seq_len: int = field(256, positive=True)
    batch_size: int = field(16, positive=True, help="global batch (sequences per optimizer step)")
    seed: int = field(0, nonneg=True)
    shuffle: bool = field(True)
    max_doc_bytes: int = field(0, nonneg=True,
                               help="truncate documents longer than this; 0 = no limit")
    split_doc_bytes: int = field(32768, nonneg=True,
                                 help="cut longer text documents into pieces at line breaks; "
                                      "0 = never")

    def check(self, path: str) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"{path}.val_fraction={self.val_fraction} must be in [0, 1)")
        if self.source == "files" and not self.train_paths:
            raise ConfigError(f"{path}.source='files' needs {path}.train_paths")
        if self.tokenizer != "byte" and not self.tokenizer_path:
            raise ConfigError(f"{path}.tokenizer={self.tokenizer!r} needs {path}.tokenizer_path")


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The outer optimizer (optax) and its schedule."""

    name: str = field("adamw", help="optimizer registry key (see hope_jax.optim.OPTIMIZERS)")
    lr: float = field(3e-3, positive=True, help="peak learning rate")
    warmup_steps: int = field(50, nonneg=True)
    decay_steps: int = field(0, nonneg=True, help="cosine decay length; 0 = train.steps")
    min_lr_ratio: float = field(0.1, nonneg=True, help="final lr = lr * min_lr_ratio")
    b1: float = field(0.9, nonneg=True)
    b2: float = field(0.95, nonneg=True)
    eps: float = field(1e-8, positive=True)
    weight_decay: float = field(0.1, nonneg=True)
    decay_embeddings: bool = field(False, help="apply weight decay to embeddings")
    decay_norms: bool = field(False, help="apply weight decay to norm scales and other vectors")
    clip_norm: float = field(1.0, nonneg=True, help="global-norm clipping; 0 = off")
    grad_accum: int = field(1, positive=True, help="micro-batches per optimizer step")
    # Deep optimizers (hope_jax/optim, SPEC §2); ignored by adamw.
    aux_lr: float = field(0.0, nonneg=True, help="peak lr of the AdamW that updates vectors and "
                          "embeddings under the matrix optimizers; 0 = lr")
    other_params: str = field("adamw", choices=("adamw", "same"),
                              help="vectors/embeddings under momentum variants: AdamW or the same "
                              "rule (Newton-Schulz optimizers always use AdamW)")
    momentum_form: str = field("ema", choices=("ema", "heavy_ball"),
                               help="momentum variants write (1-b1)*value (ema) or value "
                               "(heavy_ball) into the memory (SPEC Eq. 33)")
    precond: str = field("diag", choices=("diag", "shampoo", "none"),
                         help="preconditioner P of precond_momentum / delta_momentum "
                         "(SPEC Eqs. 38-41, 46-49)")
    precond_every: int = field(10, positive=True, help="shampoo: steps between root refreshes")
    delta_beta: float = field(0.5, nonneg=True, help="delta_momentum: strength of the "
                              "gradient-dependent decay (b1 I - beta G^ G^T) m (SPEC Eqs. 48-49)")
    delta_form: str = field("reinterpreted", choices=("reinterpreted", "paper"),
                            help="delta_momentum: normalized G^ with delta_beta, or Eqs. 48-49 "
                            "as printed (raw G G^T, coefficient 1)")
    dmgd_form: str = field("reinterpreted", choices=("reinterpreted", "paper"),
                           help="dmgd: shared MLP on normalized (g, m) with objective <f, u>, or "
                           "Eq. 50 as printed (per-leaf MLP on u, objective <m(u), 1>)")
    dmgd_hidden: int = field(16, nonneg=True, help="dmgd: neurons of the shared momentum MLP; "
                             "0 = linear memory (momentum)")
    dmgd_lr: float = field(0.01, nonneg=True, help="dmgd: inner lr of the momentum MLP (Eq. 50)")
    dmgd_decay: float = field(0.9, nonneg=True, help="dmgd: retention of the momentum MLP weights")
    nesterov: bool = field(True, help="muon: Nesterov momentum (optax.contrib.muon default)")
    ns_steps: int = field(5, positive=True, help="Newton-Schulz iterations (muon, m3; SPEC A10)")
    b3: float = field(0.9, nonneg=True, help="m3: slow-momentum factor beta3 (SPEC §2.1)")
    m3_alpha: float = field(1.0, nonneg=True, help="m3: weight of the slow momentum's read-out")
    m3_period: int = field(10, positive=True, help="m3: slow-memory chunk f (optimizer steps)")

    def check(self, path: str) -> None:
        from hope_jax.optim import OPTIMIZERS

        if self.name not in OPTIMIZERS:
            raise ConfigError(f"{path}.name={self.name!r} is not an optimizer; "
                              f"known: {sorted(OPTIMIZERS)}")
        for k in ("b1", "b2", "b3", "min_lr_ratio", "delta_beta", "dmgd_decay"):
            if not 0.0 <= getattr(self, k) <= 1.0:
                raise ConfigError(f"{path}.{k}={getattr(self, k)} must be in [0, 1]")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The outer loop: length, logging, validation and checkpoints."""

    steps: int = field(300, positive=True)
    seed: int = field(0, nonneg=True)
    log_every: int = field(10, positive=True)
    eval_every: int = field(100, nonneg=True, help="validation every N steps; 0 = only at the end")
    eval_batches: int = field(8, positive=True)
    ckpt_every: int = field(100, nonneg=True, help="checkpoint every N steps; 0 = only at the end")
    keep_ckpts: int = field(3, positive=True)
    async_ckpt: bool = field(True)
    progress: bool = field(True, help="show a progress bar")
    tensorboard: bool = field(True)


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh data x fsdp x tensor and multi-host start-up (see `hope_jax.sharding`).

    The defaults use one device (single-device behaviour); `-1` fills an axis with the devices
    left over, e.g. `fsdp=-1` shards params and optimizer state over all devices.
    """

    data: int = field(1, help="data-parallel axis size (batch split, params replicated); -1 = fill")
    fsdp: int = field(1, help="fully-sharded data-parallel axis (batch and the params' embed dim "
                      "split); -1 = fill")
    tensor: int = field(1, help="tensor-parallel axis (mlp / heads / vocab dims split); -1 = fill")
    replicated_params: str = field("warn", choices=("warn", "error", "ignore"),
                                   help="a param > 1M elements left fully replicated on a mesh "
                                   "with fsdp x tensor > 1")
    distributed: str = field("auto", choices=("auto", "on", "off"),
                             help="jax.distributed.initialize: auto = when SLURM / Open MPI / "
                             "Cloud TPU / a coordinator address says so")
    coordinator_address: str = field("", help="host:port of process 0; '' = env "
                                     "JAX_COORDINATOR_ADDRESS or auto-detect")
    num_processes: int = field(0, nonneg=True, help="with coordinator_address; 0 = env "
                               "JAX_NUM_PROCESSES")
    process_id: int = field(-1, help="with coordinator_address; -1 = env JAX_PROCESS_ID")

    def check(self, path: str) -> None:
        sizes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
        for k, v in sizes.items():
            if v == 0 or v < -1:
                raise ConfigError(f"{path}.{k}={v} must be >= 1 or -1 (fill)")
        if list(sizes.values()).count(-1) > 1:
            raise ConfigError(f"{path}: at most one of data/fsdp/tensor may be -1, got {sizes}")
        if self.process_id < -1:
            raise ConfigError(f"{path}.process_id={self.process_id} must be >= 0 or -1 (env)")


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)

    def check(self, path: str) -> None:
        if self.data.batch_size % self.optim.grad_accum:
            raise ConfigError(
                f"config.optim.grad_accum={self.optim.grad_accum} must divide "
                f"config.data.batch_size={self.data.batch_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Checks `value` against annotation `tp`; returns it converted (int->float, list->tuple)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping) and not hasattr(value, "to_dict"):
            raise ConfigError(f"{path} must be a section (dict), got {value!r}")
        return _build(tp, value, path)
    if origin is tuple:
        (elem, *_rest) = typing.get_args(tp)
        if isinstance(value, str):
            value = tuple(v for v in value.split(",") if v)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path} must be a list of {_type_name(elem)}, got {value!r}")
        return tuple(_coerce(v, elem, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
        (arg,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, arg, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be a bool, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path} must be a float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported annotation {tp}")  # pragma: no cover


def _build(cls, raw: Any, path: str):
    raw = raw.to_dict() if hasattr(raw, "to_dict") else dict(raw)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {path}.{unknown[0]} (known: {sorted(fields)})")
    kwargs = {}
    for name, value in raw.items():
        f, p = fields[name], f"{path}.{name}"
        value = _coerce(value, hints[name], p)
        meta = f.metadata
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(f"{p}={value!r} is not one of {list(meta['choices'])}")
        if meta.get("positive") and not value > 0:
            raise ConfigError(f"{p}={value!r} must be > 0")
        if meta.get("nonneg") and not value >= 0:
            raise ConfigError(f"{p}={value!r} must be >= 0")
        kwargs[name] = value
    obj = cls(**kwargs)
    if hasattr(obj, "check"):
        obj.check(path)
    return obj


def validate(raw: Any) -> Config:
    """ConfigDict / dict / Config -> validated `Config`. Raises `ConfigError` with one line."""
    if isinstance(raw, Config):
        raw = raw.to_dict()
    return _build(Config, raw, "config")


def default_config_dict():
    """A ConfigDict holding every key with its default: the base each `configs/*.py` updates.

    Starting config files from the full schema means every key can be overridden on the command
    line (`--config.data.seq_len=512`) even when the file does not mention it.
    """
    from ml_collections import ConfigDict

    return ConfigDict(Config().to_dict())


def replace(cfg: Config, **overrides: Any) -> Config:
    """A validated copy with dotted-path overrides, e.g. replace(c, **{'model.d_model': 64})."""
    d = cfg.to_dict()
    for key, value in overrides.items():
        node = d
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise ConfigError(f"unknown config key config.{key}")
        node[leaf] = value
    return validate(d)
