"""MQAR that a chunked memory can do (issue 18 item 2): 256 tokens, 8-48 pairs, and a 16-token gap
of pad tokens between the pairs and the queries, so every pair lies in a chunk before every query
at the chunk size 16 of the tiny Titans/HOPE configs (`hope_jax/eval/mqar.py`).

  python eval.py --workdir=RUN --suite=mqar --mqar_config=configs/mqar_recall.py
  python benchmarks/study.py --evals=mqar --mqar-config=configs/mqar_recall.py ...

get_config() returns {"base": a hope_jax config dict, "task": MQAR settings}; the suite trains the
run's architecture on it from scratch.
"""

import runpy
from pathlib import Path


def get_config():
    """configs/mqar_tiny.py (same model, optimizer and steps), at 256 tokens with a 16-token gap."""
    cfg = runpy.run_path(str(Path(__file__).with_name("mqar_tiny.py")))["get_config"]()
    cfg["base"].data.update(seq_len=256, batch_size=16)
    cfg["task"].update(train_num_kvs=[8, 16, 32], eval_num_kvs=[8, 16, 32, 48], gap=16)
    return cfg
