"""The benchmark scripts' own arithmetic: fast-state bytes, model FLOPs, step-time parsing."""

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import gpu_check, inner_loop, out_norm, study, throughput  # noqa: E402
from hope_jax.memory import optimizers, rules  # noqa: E402
from hope_jax.memory.scan import MemorySpec, init_state  # noqa: E402
from hope_jax.train.state import abstract_variables  # noqa: E402


def test_fast_state_bytes_is_the_memory_scan_carry():
    cfgs = throughput.model_configs("s", "float32")
    assert throughput.fast_state_bytes(cfgs["transformer"], 3) == 0
    ti = cfgs["titans_lmm"]
    hd = ti.d_model // ti.num_heads
    arch = rules.make_arch("mlp", hd, hd, depth=ti.memory.depth,
                           hidden_mult=ti.memory.hidden_mult, out_norm=True)
    ip = jax.vmap(arch.init)(jax.random.split(jax.random.PRNGKey(0), ti.num_heads))
    st = init_state(MemorySpec(arch, rules.l2, optimizers.titans(momentum=True, decay=True)),
                    ip, batch=3)
    carry = sum(x.nbytes for x in jax.tree.leaves((st.params, st.opt_state)))
    assert throughput.fast_state_bytes(ti, 3) == ti.num_layers * carry
    # HOPE carries its five memories (+ momentum) and the in-context CMS level: more than Titans
    assert throughput.fast_state_bytes(cfgs["hope"], 3) > throughput.fast_state_bytes(ti, 3)


def test_model_flops_are_six_n_plus_causal_attention():
    from hope_jax.config import Config

    cfg = throughput.model_configs("xs", "float32")["transformer"]
    leaves = jax.tree.leaves(abstract_variables(Config(model=cfg))["params"])
    leaves = [getattr(x, "value", x) for x in leaves]
    n_matrix = sum(int(np.prod(x.shape)) for x in leaves if len(x.shape) >= 2)  # tied head incl.
    t = 256
    expect = 6 * n_matrix + 6 * cfg.num_layers * t * cfg.d_model
    assert throughput.model_flops_per_token(cfg, t) == expect


def test_study_step_time_ignores_compile_and_eval_gaps(tmp_path):
    recs = [{"step": 10, "time": 100.0, "train/loss": 3.0},    # compile before step 10
            {"step": 20, "time": 101.0, "train/loss": 2.5},
            {"step": 20, "time": 109.0, "val/loss": 2.6},      # an eval in between
            {"step": 30, "time": 110.0, "train/loss": 2.2},
            {"step": 40, "time": 111.0, "train/loss": 2.1}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in recs))
    c = study._curves(str(tmp_path))
    assert c["step_s"] == pytest.approx(0.1)
    assert c["train"][-1] == (40, 2.1) and c["val"] == [(20, 2.6)]


def test_study_presets_have_equal_parameter_counts():
    from hope_jax.config import replace
    from hope_jax.param_count import load_config_file
    from hope_jax.train.state import param_count

    for common, per_cfg in study.PRESETS.values():
        counts = [param_count(replace(load_config_file(p), **{**common, **over}))
                  for p, over in per_cfg.items()]
        assert max(counts) / min(counts) < 1.02, counts


def test_gpu_check_tiny_runs_reports_over_memory_and_timeouts(tmp_path):
    """The GPU check's driver end to end on CPU at a tiny size: one model timed, one over its
    memory cap reported with its estimate, one killed by its timeout reported, none crashing."""
    tiny = ["--tiny", "--seq=16", "--set=model.num_layers=1", "--set=model.d_model=32",
            "--set=model.num_heads=2", "--models=transformer"]
    ok = gpu_check.main(tiny + [f"--out={tmp_path}/a"])
    assert json.loads((tmp_path / "a" / "gpu_check.json").read_text()) == json.loads(
        json.dumps(ok, default=float))
    assert {"device_kind", "jax", "jaxlib", "platform"} <= set(ok)
    (r,) = ok["results"]
    assert r["status"] == "ok" and r["attn_resolved"] == "xla" and r["seq"] == 16
    assert r["tok_s"] == pytest.approx(16 / r["step_s"]) and r["compile_s"] > 0
    assert len(r["losses"]) == 1 + 2 and all(np.isfinite(r["losses"]))
    over = gpu_check.main(tiny + ["--max-gb=1e-6", f"--out={tmp_path}/b"])["results"][0]
    assert over["status"] == "over memory" and over["est_gb"] > 1e-6 and "tok_s" not in over
    late = gpu_check.main(tiny + ["--timeout=0.5", f"--out={tmp_path}/c"])["results"][0]
    assert late["status"].endswith("timeout") and late["timeout_s"] == 0.5


def test_gpu_check_refuses_cpu_only_jax():
    with pytest.raises(SystemExit, match="jax\\[cuda12\\]"):
        gpu_check.main(["--models=transformer"])


@pytest.mark.slow
def test_benchmark_scripts_run(tmp_path):
    out = throughput.main(["--preset=xs", "--seqs=64", "--rounds=1",
                           f"--json={tmp_path}/t.json", f"--png={tmp_path}/t.png"])
    rows = {r["model"]: r for r in out["results"]}
    assert set(rows) == {"transformer", "titans_lmm", "hope"}
    assert rows["transformer"]["throughput_vs_transformer"] == 1.0
    assert all(r["tok_s"] > 0 for r in rows.values())
    assert (tmp_path / "t.png").exists()
    res = inner_loop.main(["--seq=64", "--batch=1", "--heads=1", "--head-dim=8", "--chunk=16",
                           "--chunks=16,32", "--remats=0,2", "--rounds=1"])
    assert set(res["forms"]) >= {"chunked_closed_form", "token_by_token"}
    assert res["dtype"]["bf16 (fp32 state)"]["rel_err"] < 0.1
    assert res["flush"]["flushed (default)"]["max_rel_diff"] < 1e-5


def test_out_norm_benchmark_and_study_variants(tmp_path):
    """The read-out benchmark at a tiny size: the clipped plain memory (the default, PAPER.md D2)
    stays contractive and finite under the stress gates; study variants parse."""
    res = out_norm.main(["--seq=256", "--head-dim=8", "--forms=clip,rms", "--loops=dgd",
                         f"--json={tmp_path}/o.json"])
    rows = {r["form"]: r for r in res["rows"]}
    assert all(rows["clip"][s]["finite"] for s in out_norm.STRESS)
    assert rows["clip"]["pert_last"] < 0.01
    assert (tmp_path / "o.json").exists()
    assert study.parse_variant("clip:model.inner.grad_clip=1.0,model.inner.out_norm=False") == (
        "clip", {"model.inner.grad_clip": 1.0, "model.inner.out_norm": False})
    assert study.parse_variant("rms:") == ("rms", {})
    assert study.parse_variant("p:model.hope.cms_periods=(64,0),model.inner.momentum=False") == (
        "p", {"model.hope.cms_periods": (64, 0), "model.inner.momentum": False})
    with pytest.raises(SystemExit, match="NAME:key=value"):
        study.parse_variant("nocolon")


def test_study_summary_counts_diverged_seeds():
    """A diverged seed (val nan, as `run_one` records a TrainingError) makes its row's mean nan
    and is counted; the other labels' rows are unaffected."""
    def run(label, seed, val):
        return {"config": "c", "label": label, "model": "hope", "params": 10, "seed": seed,
                "val_loss": val, "train_loss": val, "step_s": 1.0}
    runs = [run("a", 0, 2.0), run("a", 1, 3.0), run("b", 0, float("nan")), run("b", 1, 4.0)]
    a, b = study.summarize(runs)
    assert (a["val_loss"], a["val_loss_sd"], a["diverged"]) == (2.5, 0.5, 0)
    assert b["diverged"] == 1 and np.isnan(b["val_loss"]) and b["val_losses"][1] == 4.0
    assert a["val_minus_first"] == 0.0


def test_profile_step_attributes_trace_time_to_model_parts():
    """benchmarks/profile_step.py at a tiny size: the HLO parser maps instructions (also XLA's
    metadata-free copies inside a while body) to parts, and a traced Transformer++ step is
    attributed to its attention and FFN in both directions."""
    from benchmarks import profile_step

    hlo = "\n".join([
        "%body.1 (p: (s32[], f32[4])) -> (s32[], f32[4]) {",
        "  %copy.3 = f32[4]{0} copy(%gte.2)",
        "}",
        "ENTRY %main.9 (a: f32[4]) -> f32[4] {",
        '  %while.5 = (s32[], f32[4]) while(%t.4), condition=%cond.1, body=%body.1, '
        'metadata={op_name="jit(f)/jvp(LM)/blocks/mixer/while"}',
        '  %fusion.6 = f32[4]{0} fusion(%a), kind=kLoop, calls=%fc, '
        'metadata={op_name="jit(f)/transpose(jvp(LM))/blocks/block/mlp/mul"}',
        "}"])
    ops = profile_step.hlo_ops(hlo)
    assert profile_step.part_of(*ops["copy.3"]) == "XLA copies: mixer fwd"
    assert profile_step.part_of(*ops["fusion.6"]) == "ffn bwd"
    assert ops["while.5"][0] == "while"
    out = profile_step.main(["--models=transformer", "--seq=16", "--steps=1",
                             "--set=model.d_model=16", "--set=model.num_layers=1"])
    parts = out["models"]["transformer"]["by_part"]
    assert {"attention fwd", "attention bwd", "ffn fwd", "ffn bwd"} <= set(parts)
    total = sum(r["ms"] for r in parts.values())
    ops_total = sum(r["ops"] for r in out["models"]["transformer"]["by_opcode"].values())
    assert total > 0 and ops_total == sum(r["ops"] for r in parts.values()) > 10


def test_study_intervals_and_loss_by_position_over_seeds(tmp_path):
    """The study's 95% interval is Student-t over seeds (t_{0.975,1} = 12.706 for two), and the
    loss-by-position curves are averaged per bin with an interval each."""
    runs = [{"config": "c", "label": "a", "model": "hope", "params": 10, "seed": s,
             "val_loss": v, "train_loss": v, "step_s": 1.0, "pos_positions": [4, 8],
             "pos_loss": [v + 1.0, v], "cl_bwt": -v} for s, v in ((0, 2.0), (1, 3.0))]
    (row,) = study.summarize(runs)
    half = 12.7062 * np.std([2.0, 3.0], ddof=1) / np.sqrt(2)
    assert row["val_loss_ci95"] == pytest.approx(half, rel=1e-4)
    assert row["pos_loss"] == [3.5, 2.5] and row["pos_positions"] == [4, 8]
    assert row["pos_loss_ci95"] == pytest.approx([half, half], rel=1e-4)
    assert (row["cl_bwt"], row["cl_bwt_ci95"]) == pytest.approx((-2.5, half), rel=1e-4)
    assert row["cl_bwt_seeds"] == [-2.0, -3.0]
    # differences to the first label, seed by seed: b = a + 0.1 + 0.01 * seed on every seed
    other = [{**r, "label": "b", "val_loss": r["val_loss"] + 0.1 + 0.01 * r["seed"],
              "pos_loss": [x + 0.1 + 0.01 * r["seed"] for x in r["pos_loss"]]} for r in runs]
    first, second = study.summarize(runs + other)
    paired_half = 12.7062 * np.std([0.1, 0.11], ddof=1) / np.sqrt(2)
    assert first["val_minus_first_paired"] == 0.0
    assert second["val_minus_first_paired"] == pytest.approx(0.105)
    assert second["val_minus_first_paired_ci95"] == pytest.approx(paired_half, rel=1e-4)
    assert second["val_minus_first_paired_ci95"] < second["val_loss_ci95"] / 10  # paired: tight
    assert second["pos_minus_first"] == pytest.approx([0.105, 0.105])
    assert second["pos_minus_first_ci95"] == pytest.approx([paired_half] * 2, rel=1e-4)
    study._plot_summary([row, {**row, "label": "b"}], ["cl_bwt"], str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").stat().st_size > 1000
    assert np.isnan(study.ci95([1.0]))
