"""MQAR that a chunked memory can do (issue 18 item 2): 256 tokens, 8-48 pairs, and a 16-token gap
of pad tokens between the pairs and the queries, so every pair lies in a chunk before every query
at the chunk size 16 of the tiny Titans/HOPE configs (`hope_jax/eval/mqar.py`).

  python eval.py --workdir=RUN --suite=mqar --mqar_config=configs/mqar_recall.py
  python benchmarks/study.py --evals=mqar --mqar-config=configs/mqar_recall.py ...

get_config() returns {"base": a hope_jax config dict, "task": MQAR settings}; the suite trains the
run's architecture on it from scratch.
"""

from hope_jax.config import default_config_dict


def get_config():
    c = default_config_dict()
    c.model.update(name="transformer", vocab_size=257, d_model=64, num_layers=2, num_heads=4)
    c.data.update(source="stdlib", seq_len=256, batch_size=16, seed=0)
    c.optim.update(name="adamw", lr=3e-3, warmup_steps=20, weight_decay=0.0, clip_norm=1.0)
    c.train.update(steps=300, log_every=50, progress=False, tensorboard=False)
    task = {"train_num_kvs": [8, 16, 32], "eval_num_kvs": [8, 16, 32, 48], "num_keys": 64,
            "num_values": 64, "eval_batches": 4, "seed": 0, "gap": 16}
    return {"base": c, "task": task}
