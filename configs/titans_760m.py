"""Titans (LMM) at the paper's 760M scale: d=1536, 24 layers, 16 heads (SPEC A13, §6 tables).

Same recipe as `configs/transformer_760m.py` (Titans / Gated DeltaNet, SPEC §5, A13): vocab 32K,
4K context, 0.5M-token batches, AdamW lr 4e-4 cosine, weight decay 0.1, bf16 matmuls (the fast
memory state and gates stay fp32), block remat. Memory: 2-layer residual MLP per head (hidden 4x
head dim), chunk 64, momentum + forget gate, token-wise gates (Titans defaults, SPEC §4.6, A2).
FFN hidden 3584 so that the total lands on the nominal size (759.2M from jax.eval_shape, tied
embeddings; -0.1% of nominal).
"""

from hope_jax.config import default_config_dict


def get_config():
    c = default_config_dict()
    c.model.update(name="titans_lmm", vocab_size=32000, d_model=1536, num_layers=24,
                   num_heads=16, mlp_hidden=3584, tie_embeddings=True, dtype="bfloat16",
                   param_dtype="float32", remat="block", scan_layers=True)
    c.model.memory.update(arch="mlp", depth=2, hidden_mult=4.0)
    c.model.inner.update(chunk_size=64, remat_every=4)
    c.data.update(tokenizer="sentencepiece", tokenizer_path="tokenizers/llama2/tokenizer.model",
                  seq_len=4096, batch_size=128)
    c.optim.update(name="adamw", lr=4e-4, warmup_steps=2000, min_lr_ratio=0.1, b1=0.9, b2=0.95,
                   weight_decay=0.1, clip_norm=1.0, grad_accum=1)
    c.train.update(steps=60000, log_every=50, eval_every=1000, eval_batches=64, ckpt_every=1000)
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    return c
