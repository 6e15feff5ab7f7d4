"""MQAR at Zoology-like scale: d=256, 2 layers, 256 tokens, up to 64 key-value pairs.

get_config() returns {"base": a hope_jax config dict, "task": MQAR settings}.
"""

from hope_jax.config import default_config_dict


def get_config():
    c = default_config_dict()
    c.model.update(name="transformer", vocab_size=8192, d_model=256, num_layers=2, num_heads=4)
    c.data.update(source="stdlib", seq_len=256, batch_size=64, seed=0)
    c.optim.update(name="adamw", lr=1e-3, warmup_steps=200, weight_decay=0.1, clip_norm=1.0)
    c.train.update(steps=20000, log_every=500, progress=False, tensorboard=False)
    task = {"train_num_kvs": [4, 8, 16, 32, 64], "eval_num_kvs": [4, 8, 16, 32, 64],
            "num_keys": 4096, "num_values": 4096, "eval_batches": 8, "seed": 0}
    return {"base": c, "task": task}
