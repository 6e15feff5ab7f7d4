"""The paper's pre-training recipe, shared by every `configs/<model>_{340m,760m,1_3b}.py`.

Titans / Gated DeltaNet recipe that the paper follows (SPEC §5, assumptions marked A13): vocab 32K
(Llama-2 sentencepiece tokenizer), 4K context, batch 128 x 4096 = 0.5M tokens, AdamW lr 4e-4
with cosine decay to 10%, weight decay 0.1, b=(0.9, 0.95), clip 1.0, warmup 2000 steps (~1B
tokens), bf16 matmuls with fp32 params / fast state / loss, block remat, params and optimizer
state sharded over every device (fsdp=-1). Token budgets: 340M and 760M -> 30B tokens
(60k steps), 1.3B -> 100B tokens (200k steps).

Shapes (SPEC A13, FLA-style): 340M d=1024, 760M d=1536, 1.3B d=2048; 24 layers, 16 heads.
The tokenizer path is a placeholder: put the Llama-2 `tokenizer.model` there or override
`--config.data.tokenizer_path` (or `--config.data.tokenizer=hf` with a tokenizer.json).
"""

from __future__ import annotations

SIZES = {"340m": (1024, 60_000), "760m": (1536, 60_000), "1_3b": (2048, 200_000)}
NOMINAL = {"340m": 340e6, "760m": 760e6, "1_3b": 1.3e9}


def paper_recipe(c, size: str, **model):
    """Fills `c` (a default_config_dict()) with the recipe at `size` plus model overrides."""
    d, steps = SIZES[size]
    c.model.update(vocab_size=32000, d_model=d, num_layers=24, num_heads=16, tie_embeddings=True,
                   dtype="bfloat16", param_dtype="float32", remat="block", scan_layers=True)
    c.model.update(**model)
    c.data.update(tokenizer="sentencepiece", tokenizer_path="tokenizers/llama2/tokenizer.model",
                  seq_len=4096, batch_size=128)
    c.optim.update(name="adamw", lr=4e-4, warmup_steps=2000, min_lr_ratio=0.1, b1=0.9, b2=0.95,
                   weight_decay=0.1, clip_norm=1.0, grad_accum=1)
    c.train.update(steps=steps, log_every=50, eval_every=1000, eval_batches=64, ckpt_every=1000)
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    return c
