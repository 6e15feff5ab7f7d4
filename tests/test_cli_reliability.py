"""The CLI as a user runs it (subprocesses of train.py / eval.py): no run lost, one error line.

Every run is tiny (1 layer, d_model 32, T 16, batch 2) so each subprocess takes seconds; runs are
shared between asserts. Disk full is simulated honestly with RLIMIT_FSIZE in the child (writes past
the limit fail with EFBIG, as they fail with ENOSPC on a full disk); tests run as root, so an
impossible workdir is a path under a regular file rather than a chmod.
"""

import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import ROOT

TINY = ["--config=configs/transformer_tiny.py", "--config.model.d_model=32",
        "--config.model.num_layers=1", "--config.data.seq_len=16", "--config.data.batch_size=2",
        "--config.train.eval_batches=1", "--config.train.progress=False",
        "--config.train.tensorboard=False", "--config.train.log_every=1",
        "--config.train.eval_every=0", "--config.train.ckpt_every=0",
        "--config.optim.warmup_steps=2"]


def _env(**extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", **extra)
    env.pop("HOPE_JAX_VERBOSE", None)
    env.update(extra)
    return env


def _run(script, *args, env=None, **kw):
    return subprocess.run([sys.executable, script, *args], cwd=ROOT, env=env or _env(),
                          capture_output=True, text=True, timeout=300, **kw)


def train(*args, **kw):
    return _run("train.py", *TINY, *args, **kw)


def evaluate(*args, **kw):
    return _run("eval.py", *args, **kw)


def assert_one_error_line(r, *needles):
    """Exit status 2, nothing on stdout, exactly one stderr line `error: ...` naming `needles`."""
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2, r.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-3000:]
    assert r.stdout == ""
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def steps_logged(wd):
    with open(os.path.join(wd, "metrics.jsonl")) as f:
        return [json.loads(ln)["step"] for ln in f if "train/loss" in ln]


def ckpt_steps(wd):
    d = os.path.join(wd, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


@pytest.fixture(scope="module")
def run4(tmp_path_factory):
    """4 steps, checkpoints at 2 and 4, eval at 2 and 4, progress bar on; a stale lock file of a
    dead process is already in the (new) workdir."""
    wd = tmp_path_factory.mktemp("cli") / "run4"
    wd.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (wd / ".lock").write_text(f"{dead.pid}\n")
    r = train("--config.train.steps=4", "--config.train.ckpt_every=2",
              "--config.train.eval_every=2", "--config.train.progress=True", f"--workdir={wd}")
    return wd, r


def copy_run(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_stdout_is_the_json_result_and_stale_lock_does_not_block(run4):
    wd, r = run4
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)  # nothing but the JSON result on stdout
    assert summary["status"] == "done" and summary["step"] == 4
    assert "step 2: val loss" in r.stderr and "step 4: val loss" in r.stderr
    assert ckpt_steps(wd) == [2, 4]
    assert steps_logged(wd) == [1, 2, 3, 4]


@pytest.mark.parametrize("kind", ["missing", "binary", "no_val_split"])
def test_bad_validation_data_fails_before_the_first_step(tmp_path, kind):
    text = tmp_path / "train.txt"
    text.write_text("def f(x):\n    return x + 1\n" * 200)
    wd = tmp_path / "run"
    if kind == "no_val_split":
        args = ["--config.data.val_fraction=0"]
    else:
        val = tmp_path / "val.txt"
        if kind == "binary":
            val.write_bytes(bytes(range(256)) * 8)
        args = ["--config.data.source=files", f"--config.data.train_paths={text}",
                f"--config.data.val_paths={val}"]
    r = train("--config.train.steps=3", *args, f"--workdir={wd}")
    assert_one_error_line(r)
    assert "val" in r.stderr
    assert not os.path.exists(wd)  # nothing trained, nothing written: the workdir is not pinned
    if kind == "missing":  # the corrected rerun, with another width, starts
        (tmp_path / "val.txt").write_text("def g(y):\n    return y * 2\n" * 50)
        r = train("--config.train.steps=2", "--config.model.d_model=16", *args, f"--workdir={wd}")
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.loads(r.stdout)["step"] == 2


def test_nonfinite_never_leaves_a_bad_last_checkpoint(tmp_path):
    wd = tmp_path / "run"
    r = train("--config.train.steps=40", "--config.optim.lr=1e30", "--config.optim.warmup_steps=20",
              "--config.train.ckpt_every=1", "--config.train.keep_ckpts=1", f"--workdir={wd}")
    line = assert_one_error_line(r, "non-finite")
    good = ckpt_steps(wd)
    assert len(good) == 1 and f"last good checkpoint: step {good[0]}" in line, (line, good)
    e = evaluate(f"--workdir={wd}", "--max_batches=1")
    assert e.returncode == 0, e.stderr[-3000:]
    res = json.loads(e.stdout)
    # the kept checkpoint is not the collapsed one (uniform output over 257 tokens)
    assert res["step"] == good[0] and math.isfinite(res["loss"])
    assert abs(res["loss"] - math.log(257)) > 1e-3, res
    r = train("--config.train.steps=40", "--config.optim.lr=1e30", "--config.optim.warmup_steps=0",
              f"--workdir={tmp_path / 'none'}")
    line = assert_one_error_line(r, "non-finite", "no checkpoint")
    assert "None" not in line


def test_sigint_saves_like_sigterm_and_a_second_trainer_is_refused(tmp_path):
    wd = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "train.py", *TINY, "--config.train.steps=100000",
                          f"--workdir={wd}"], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and p.poll() is None:
            if os.path.exists(wd / "metrics.jsonl") and len(steps_logged(wd)) >= 2:
                break
            time.sleep(0.3)
        second = train("--config.train.steps=5", f"--workdir={wd}")
        assert_one_error_line(second, "in use", str(p.pid))
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
    finally:
        p.kill()
    assert p.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["status"] == "preempted"
    assert "signal 2: saved checkpoint" in err  # messages appear with the progress bar off
    assert ckpt_steps(wd) == [summary["step"]]


@pytest.mark.parametrize("args,needles", [
    (["--config.model.d_modle=64"], ["d_modle", "did you mean", "d_model"]),
    (["--config.modle.d_model=64"], ["modle", "did you mean", "model"]),
    (["--config=configs/nope.py"], ["configs/nope.py"]),
])
def test_config_mistakes_are_one_line(tmp_path, args, needles):
    wd = tmp_path / "run"
    assert_one_error_line(train(*args, f"--workdir={wd}"), *needles)
    assert not os.path.exists(wd)


def test_verbose_shows_the_traceback(tmp_path):
    r = train("--config.model.d_modle=64", f"--workdir={tmp_path}/r",
              env=_env(HOPE_JAX_VERBOSE="1"))
    assert r.returncode != 0 and "Traceback" in r.stderr
    r = evaluate("--verbose")
    assert r.returncode != 0 and "Traceback" in r.stderr and "--workdir" in r.stderr


def test_impossible_workdir_is_one_line(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    assert_one_error_line(train(f"--workdir={tmp_path}/file/run"), "file/run")
    assert (tmp_path / "file").read_text() == "not a directory"


def test_disk_full_during_a_save_is_one_line_and_keeps_the_last_checkpoint(run4, tmp_path):
    wd = copy_run(run4[0], tmp_path / "run")
    limit = 100_000  # smaller than the checkpoint's array file, larger than everything else

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    r = train("--config.train.steps=6", f"--workdir={wd}", preexec_fn=cap)
    assert_one_error_line(r, "checkpoint step 6", "File too large")
    assert ckpt_steps(wd) == [2, 4]
    e = evaluate(f"--workdir={wd}", "--max_batches=1")
    assert e.returncode == 0 and json.loads(e.stdout)["step"] == 4, e.stderr[-3000:]


def test_eval_usage_errors_are_one_line(run4):
    wd = run4[0]
    assert_one_error_line(evaluate(), "--workdir")
    assert_one_error_line(evaluate(f"--workdir={wd}", "--prompt="), "--prompt")
    assert_one_error_line(evaluate(f"--workdir={wd}", "--suite=bogus"), "bogus", "ppl")


def test_eval_prints_no_library_warnings(run4):
    r = evaluate(f"--workdir={run4[0]}", "--max_batches=1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["step"] == 4
    assert r.stderr.strip() == "", r.stderr


def test_missing_array_files_name_the_intact_steps(run4, tmp_path):
    wd = copy_run(run4[0], tmp_path / "run")
    shutil.rmtree(wd / "checkpoints" / "4" / "state" / "ocdbt.process_0" / "d")
    for r in (train("--config.train.steps=6", f"--workdir={wd}"), evaluate(f"--workdir={wd}")):
        assert_one_error_line(r, "checkpoint step 4", "--restore_step=2")
    e = evaluate(f"--workdir={wd}", "--restore_step=2", "--max_batches=1")
    assert e.returncode == 0 and json.loads(e.stdout)["step"] == 2, e.stderr[-3000:]


def test_empty_step_folder_and_restore_step_resume(run4, tmp_path):
    """An empty newest step folder blocks with a hint; --restore_step resumes from an older
    step (newer ones are set aside, not deleted) and metrics.jsonl does not repeat steps."""
    wd = copy_run(run4[0], tmp_path / "run")
    (wd / "checkpoints" / "7").mkdir()
    assert_one_error_line(train("--config.train.steps=8", f"--workdir={wd}"),
                          "checkpoint step 7", "4, 2", "--restore_step=4")
    r = train("--config.train.steps=5", "--restore_step=2", f"--workdir={wd}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout)["start_step"] == 2
    assert steps_logged(wd) == [1, 2, 3, 4, 5]
    assert ckpt_steps(wd) == [2, 5]
    assert sorted(os.listdir(wd / "checkpoints_aside")) == ["4", "7"]


def test_optimizer_change_on_resume_says_what_differs(run4, tmp_path):
    wd = copy_run(run4[0], tmp_path / "run")
    line = assert_one_error_line(
        train("--config.train.steps=6", "--config.optim.name=muon", f"--workdir={wd}"),
        "config.optim.name", "adamw", "muon")
    assert "corrupt" not in line
    assert ckpt_steps(wd) == [2, 4]
