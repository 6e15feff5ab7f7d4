"""Transformer++ (Llama style) at the paper's 760M scale: d=1536, 24 layers, 16 heads (SPEC A13).

Recipe (Titans / Gated DeltaNet, SPEC §5, assumptions marked A13): vocab 32K (Llama-2 tokenizer),
4K context, batch 128 x 4096 = 0.5M tokens, AdamW lr 4e-4 with cosine decay, weight decay 0.1,
b=(0.9, 0.95), clip 1.0, warmup 2000 steps (~1B tokens), 60000 steps = 30B tokens, bf16
matmuls with fp32 params, norms, softmax and loss, block remat.
Params: 728.7M from jax.eval_shape (tied embeddings; -4.1% of nominal).

The mesh shards params and optimizer state over all devices (fsdp=-1); see
`benchmarks/memory_plan.py --config=configs/transformer_760m.py` for per-device memory.

Tokenizer: a placeholder path. Put the Llama-2 `tokenizer.model` (sentencepiece, 32000 pieces)
there, or point at another 32K tokenizer: `--config.data.tokenizer_path=/path/tokenizer.model`,
or `--config.data.tokenizer=hf --config.data.tokenizer_path=/path/tokenizer.json`. Data: the
embedded corpus by default; for the paper's mixture use `--config.data.source=files
--config.data.train_paths=/data/fineweb-edu`.
"""

from hope_jax.config import default_config_dict


def get_config():
    c = default_config_dict()
    c.model.update(name="transformer", vocab_size=32000, d_model=1536, num_layers=24,
                   num_heads=16, tie_embeddings=True, dtype="bfloat16", param_dtype="float32",
                   remat="block", scan_layers=True)
    c.data.update(tokenizer="sentencepiece", tokenizer_path="tokenizers/llama2/tokenizer.model",
                  seq_len=4096, batch_size=128)
    c.optim.update(name="adamw", lr=4e-4, warmup_steps=2000, min_lr_ratio=0.1, b1=0.9, b2=0.95,
                   weight_decay=0.1, clip_norm=1.0, grad_accum=1)
    c.train.update(steps=60000, log_every=50, eval_every=1000, eval_batches=64, ckpt_every=1000)
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    return c
