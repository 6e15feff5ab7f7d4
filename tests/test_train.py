"""End-to-end training through `hope_jax.train.loop.train` (the function train.py calls)."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from hope_jax.config import ConfigError
from hope_jax.data import DataError
from hope_jax.train.checkpoint import Checkpointer, CheckpointError
from hope_jax.train.loop import TrainingError, train
from tests.helpers import ROOT, tiny_config, train_losses


def _tree_hash(path):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            p = os.path.join(root, name)
            h.update(p.encode())
            with open(p, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def test_loss_decreases(tmp_path):
    cfg = tiny_config(**{"train.steps": 60, "train.eval_every": 30})
    out = train(cfg, str(tmp_path))
    losses = train_losses(tmp_path)
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < np.mean(losses[:5]) - 1.0, losses
    assert out["val_loss"] < np.log(257) - 1.0
    with open(tmp_path / "config.json") as f:
        saved = json.load(f)
    assert saved["model"]["d_model"] == 64


def test_eval_and_checkpoint_on_the_same_step(tmp_path):
    """Validation and a checkpoint due at the same step (the configs' eval_every == ckpt_every)."""
    out = train(tiny_config(**{"train.steps": 4, "train.eval_every": 2, "train.ckpt_every": 2}),
                str(tmp_path))
    assert out["step"] == 4 and np.isfinite(out["val_loss"])
    assert Checkpointer(str(tmp_path), read_only=True).latest_step() == 4
    assert len(train_losses(tmp_path)) == 4


def _restore_all(workdir, step):
    """(state, next 3 training batches from the restored data position)."""
    from hope_jax.data import make_dataset
    from hope_jax.models.lm import LM
    from hope_jax.train.state import init_state, make_optimizer

    ck = Checkpointer(str(workdir), read_only=True)
    cfg = tiny_config()
    model = LM(cfg.model)
    abstract = jax.eval_shape(lambda: init_state(cfg, model, make_optimizer(cfg, model)))
    it = iter(make_dataset(cfg.data, "train"))
    state, _ = ck.restore(step, abstract, it)
    ck.close()
    return state, [next(it) for _ in range(3)]


def test_resume_equals_straight_run(tmp_path):
    """Train 2k steps == train k, checkpoint, restart in a new process, train k more."""
    k = 8
    straight, split = tmp_path / "straight", tmp_path / "split"
    train(tiny_config(**{"train.steps": 2 * k}), str(straight))
    train(tiny_config(**{"train.steps": 2 * k}), str(split), stop_after=k)
    assert Checkpointer(str(split), read_only=True).latest_step() == k
    code = (
        f"import sys; sys.path.insert(0, {ROOT!r})\n"
        "from tests.helpers import tiny_config\n"
        "from hope_jax.train.loop import train\n"
        f"train(tiny_config(**{{'train.steps': {2 * k}}}), {str(split)!r})\n"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env=env, timeout=300)
    s1, d1 = _restore_all(straight, 2 * k)
    s2, d2 = _restore_all(split, 2 * k)
    for a, b in zip(d1, d2):  # the data position continues exactly
        assert all(np.array_equal(a[k], b[k]) for k in a)
    assert int(s1.step) == int(s2.step) == 2 * k
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
                 s1.params, s2.params)
    np.testing.assert_allclose(train_losses(straight)[k:], train_losses(split)[k:], rtol=1e-5)


def test_nonfinite_loss_stops_and_keeps_checkpoint(tmp_path):
    train(tiny_config(**{"train.steps": 4}), str(tmp_path))
    before = _tree_hash(tmp_path / "checkpoints")
    # Same optimizer structure (so the checkpoint restores), absurd learning rate.
    bad = tiny_config(**{"train.steps": 10, "optim.lr": 1e30, "optim.warmup_steps": 0})
    msg = r"non-finite loss at step \d+.*last good checkpoint: step 4"
    with pytest.raises(TrainingError, match=msg):
        train(bad, str(tmp_path))
    assert _tree_hash(tmp_path / "checkpoints") == before


def test_first_ctrl_c_stops_and_the_second_aborts():
    """SIGINT is handled like SIGTERM (a flag checked between steps); a second one aborts."""
    from hope_jax.train.loop import _StopFlag

    before = signal.getsignal(signal.SIGINT)  # SIG_IGN under `nohup cmd &`, else Python's
    with _StopFlag() as stop:
        signal.raise_signal(signal.SIGINT)
        assert stop.signal == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is restored


def test_different_model_in_workdir_is_refused(tmp_path):
    train(tiny_config(**{"train.steps": 2}), str(tmp_path))
    before = _tree_hash(tmp_path)
    with pytest.raises(CheckpointError, match=r"config\.model\.d_model: workdir 64 vs config 128"):
        train(tiny_config(**{"model.d_model": 128}), str(tmp_path))
    assert _tree_hash(tmp_path) == before


def test_settings_added_to_the_schema_later_do_not_orphan_old_runs():
    """A run written before a model setting existed still matches while the setting keeps its
    default, and is refused once it does not (config.json and checkpoint meta alike)."""
    from hope_jax.train.checkpoint import config_diff, model_defaults

    defaults = model_defaults()
    current = json.loads(json.dumps(tiny_config().to_dict()["model"]))
    old = {k: v for k, v in current.items() if k != "attn_q_block"}
    old["hope"] = {k: v for k, v in current["hope"].items() if k != "cms_lr"}
    assert config_diff(old, current, "config.model", defaults=defaults) == []
    changed = {**current, "attn_q_block": 512, "hope": {**current["hope"], "cms_lr": 0.1}}
    assert config_diff(old, changed, "config.model", defaults=defaults) == [
        "config.model.attn_q_block: checkpoint '<absent>' vs config 512",
        "config.model.hope.cms_lr: checkpoint '<absent>' vs config 0.1"]
    assert config_diff(old, current, "config.model")  # without defaults: strict


def test_runtime_model_settings_may_change_on_resume():
    """The attention kernel and query blocking choose how the same function runs (cudnn on the
    GPU, xla on CPU): changing them is not a different model; any other model key still is."""
    from hope_jax.train.checkpoint import model_diff

    saved = json.loads(json.dumps(tiny_config().to_dict()["model"]))
    assert model_diff(saved, {**saved, "attn_impl": "dot_product", "attn_q_block": 64}) == []
    assert model_diff(saved, {**saved, "d_model": 128}) == [
        "config.model.d_model: checkpoint 64 vs config 128"]


def test_checkpoint_from_other_model_is_refused(tmp_path):
    """Even without config.json, the checkpoint metadata catches a model mismatch."""
    train(tiny_config(**{"train.steps": 2}), str(tmp_path))
    os.remove(tmp_path / "config.json")
    before = _tree_hash(tmp_path / "checkpoints")
    msg = r"different model/tokenizer \(config\.model\.num_layers"
    with pytest.raises(CheckpointError, match=msg):
        train(tiny_config(**{"model.num_layers": 3}), str(tmp_path))
    assert _tree_hash(tmp_path / "checkpoints") == before


def test_corrupt_checkpoint_is_reported_not_deleted(tmp_path):
    train(tiny_config(**{"train.steps": 2}), str(tmp_path))
    state_dir = tmp_path / "checkpoints" / "2" / "state"
    victims = [os.path.join(r, f) for r, _, fs in os.walk(state_dir) for f in fs
               if os.path.getsize(os.path.join(r, f)) > 64]
    assert victims
    for v in victims:
        with open(v, "r+b") as f:
            f.truncate(16)
    before = _tree_hash(tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match=r"checkpoint step 2 .* corrupt"):
        train(tiny_config(**{"train.steps": 4}), str(tmp_path))
    assert _tree_hash(tmp_path / "checkpoints") == before


def test_vocab_mismatch(tmp_path):
    msg = r"tokenizer 'byte' has 257 tokens but config\.model\.vocab_size=200"
    with pytest.raises(ConfigError, match=msg):
        train(tiny_config(**{"model.vocab_size": 200}), str(tmp_path))
    assert not os.path.exists(tmp_path / "config.json")


@pytest.mark.parametrize("content,pattern", [
    (None, r"does not exist|not found|missing"),
    (b"", r"empty"),
    (b"ok text \xff\xfe bad bytes", r"UTF-8"),
])
def test_bad_data_files(tmp_path, content, pattern):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    cfg = tiny_config(**{"data.source": "files", "data.train_paths": (str(path),)})
    with pytest.raises(DataError, match=pattern) as e:
        train(cfg, str(tmp_path / "run"))
    assert "corpus.txt" in str(e.value)


def _cli(args, **kw):
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, **kw)


def test_cli_bad_override_and_missing_workdir(tmp_path):
    r = _cli(["train.py", "--config=configs/transformer_tiny.py", "--config.model.num_heads=3",
              f"--workdir={tmp_path}/run"])
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: config.model.num_heads=3 must divide")
    assert not os.path.exists(tmp_path / "run")
    r = _cli(["eval.py", f"--workdir={tmp_path}/nothing"])
    assert r.returncode == 2
    assert "does not exist" in r.stderr.strip().splitlines()[-1]


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    wd = tmp_path / "run"
    args = ["train.py", "--config=configs/transformer_tiny.py", "--config.model.d_model=64",
            "--config.train.steps=100000", "--config.train.progress=False",
            "--config.train.log_every=1", "--config.train.eval_every=0",
            "--config.train.ckpt_every=0", f"--workdir={wd}"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    p = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        if os.path.exists(wd / "metrics.jsonl") and len(train_losses(wd)) >= 3:
            break
        time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err[-2000:]
    summary = json.loads(out)
    assert summary["status"] == "preempted"
    assert Checkpointer(str(wd), read_only=True).latest_step() == summary["step"] > 0


def test_eval_cli_scores_and_samples(tmp_path):
    train(tiny_config(**{"train.steps": 3}), str(tmp_path))
    r = _cli(["eval.py", f"--workdir={tmp_path}", "--max_batches=2"])
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    assert res["step"] == 3 and res["loss"] > 0 and res["bpb"] > 0
    r = _cli(["eval.py", f"--workdir={tmp_path}", "--prompt=def ", "--max_new_tokens=5",
              "--temperature=0"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["prompt"] == "def "


def test_abstract_state_traces_the_model_once():
    """The optimizer's routing, the shardings and the restore target all read one abstract init
    (HOPE's takes seconds to trace); another sequence length is another trace."""
    from hope_jax import sharding
    from hope_jax.models.lm import LM
    from hope_jax.models.registry import MODELS, register_model
    from hope_jax.models.transformer import TransformerBlock
    from hope_jax.train.state import abstract_state, make_optimizer, state_shardings

    traces = []

    class CountingBlock(TransformerBlock):
        def __call__(self, *args, **kw):
            traces.append(1)
            return super().__call__(*args, **kw)

    register_model("_counting", CountingBlock, decode_chunk=lambda cfg: 1)
    try:
        for seq_len in (24, 40):
            cfg = tiny_config(**{"model.name": "_counting", "model.num_layers": 1,
                                 "model.scan_layers": False, "data.seq_len": seq_len})
            model, before = LM(cfg.model), len(traces)
            tx = make_optimizer(cfg, model)
            sh = state_shardings(cfg, model, tx, sharding.make_mesh(cfg.mesh))
            abstract_state(cfg, model, tx, sh)
            abstract_state(cfg, model, tx)
            assert len(traces) - before == 1, seq_len
    finally:
        del MODELS["_counting"]
