"""Multi-host training: 2 processes on localhost (`jax.distributed`, 4 fake CPU devices each).

One (2, 2, 2) mesh spans both processes (the data axis splits across them), each process feeds its
own rows, orbax writes one checkpoint together, and a second launch of both processes resumes it.
"""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from hope_jax import sharding
from hope_jax.config import MeshConfig
from hope_jax.train.checkpoint import Checkpointer
from tests.helpers import ROOT, tiny_config

_WORKER = """
import json, sys
sys.path.insert(0, {root!r})
from hope_jax import sharding
from hope_jax.config import MeshConfig
pid = int(sys.argv[1])
sharding.initialize_distributed(MeshConfig(coordinator_address={addr!r}, num_processes=2,
                                           process_id=pid))
import jax
assert jax.process_count() == 2 and len(jax.devices()) == 8 and len(jax.local_devices()) == 4
from tests.helpers import tiny_config
from hope_jax.train.loop import train
cfg = tiny_config(**{overrides!r})
out = train(cfg, {workdir!r}, stop_after={stop_after!r})
print("RESULT " + json.dumps(out), flush=True)
"""

OVERRIDES = {"train.steps": 5, "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2,
             "train.eval_batches": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(workdir: str, stop_after) -> list[dict]:
    code = _WORKER.format(root=ROOT, addr=f"127.0.0.1:{_free_port()}", overrides=OVERRIDES,
                          workdir=workdir, stop_after=stop_after)
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=4")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outs = []
    for p in procs:
        try:
            text, _ = p.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        assert p.returncode == 0, text[-3000:]
        outs.append(json.loads(text.split("RESULT ", 1)[1].splitlines()[0]))
    return outs


@pytest.mark.slow  # ~80 s on 2 shared CPU cores (four process launches, each compiling)
def test_two_processes_train_checkpoint_resume(tmp_path):
    workdir = str(tmp_path / "run")
    first = _launch(workdir, stop_after=3)
    assert [o["step"] for o in first] == [3, 3]
    assert first[0]["train_loss"] == first[1]["train_loss"]  # one global loss
    assert Checkpointer(workdir, read_only=True).all_steps() == [3]
    second = _launch(workdir, stop_after=None)
    assert [(o["start_step"], o["step"]) for o in second] == [(3, 5), (3, 5)]
    assert np.isfinite(second[0]["val_loss"])
    with open(os.path.join(workdir, "metrics.jsonl")) as f:  # process 0 alone writes metrics
        steps = [r["step"] for r in map(json.loads, f) if "train/loss" in r]
    assert steps == [1, 2, 3, 4, 5]

    # the 2-process checkpoint restores in this single process, onto another mesh
    from hope_jax.models.lm import LM
    from hope_jax.train.state import abstract_state, make_optimizer, state_shardings

    cfg = tiny_config(**{**OVERRIDES, "mesh.data": 1, "mesh.fsdp": 8, "mesh.tensor": 1})
    model = LM(cfg.model)
    tx = make_optimizer(cfg, model)
    sh = state_shardings(cfg, model, tx, sharding.make_mesh(cfg.mesh))
    ck = Checkpointer(workdir, read_only=True)
    state, _ = ck.restore(5, abstract_state(cfg, model, tx, sh))
    ck.close()
    assert int(state.step) == 5
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_distributed_is_off_without_cluster(monkeypatch):
    for var in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE",
                "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"):
        monkeypatch.delenv(var, raising=False)
    assert sharding.initialize_distributed(MeshConfig()) is False
    assert sharding.initialize_distributed(MeshConfig(distributed="off")) is False
    monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
    with pytest.raises(sharding.ShardingError, match="num_processes/process_id"):
        sharding.initialize_distributed(MeshConfig(coordinator_address="127.0.0.1:1"))
