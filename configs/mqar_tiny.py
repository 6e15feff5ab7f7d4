"""MQAR (associative recall) train + eval: a tiny model trained from scratch, accuracy vs pairs.

  python eval.py --suite=mqar --mqar_config=configs/mqar_tiny.py \
      --mqar_config_override=model.name=hope   # any registered model

get_config() returns {"base": a hope_jax config dict, "task": MQAR settings}.
"""

from hope_jax.config import default_config_dict


def get_config():
    c = default_config_dict()
    c.model.update(name="transformer", vocab_size=257, d_model=64, num_layers=2, num_heads=4)
    c.data.update(source="stdlib", seq_len=64, batch_size=32, seed=0)
    c.optim.update(name="adamw", lr=3e-3, warmup_steps=20, weight_decay=0.0, clip_norm=1.0)
    c.train.update(steps=300, log_every=50, progress=False, tensorboard=False)
    task = {"train_num_kvs": [2, 4, 8], "eval_num_kvs": [2, 4, 8, 16], "num_keys": 64,
            "num_values": 64, "eval_batches": 4, "seed": 0}
    return {"base": c, "task": task}
