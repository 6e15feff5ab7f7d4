"""Evaluate a run: loss / perplexity, lm-eval tasks, NIAH, MQAR, continual learning, sampling.

  python eval.py --workdir=runs/tiny                       # validation split of the run's data
  python eval.py --workdir=runs/tiny --data=my.txt,more/   # given files or directories
  python eval.py --workdir=runs/tiny --prompt="def main(" --max_new_tokens=200 --temperature=0.8
  python eval.py --workdir=runs/hope --tasks=wikitext,lambada_openai,piqa,hellaswag,winogrande,\
arc_easy,arc_challenge,siqa,boolq [--task_dir=local_yamls/] [--limit=N]   # paper table (SPEC §5)
  python eval.py --workdir=runs/tiny --suite=all           # every report, offline (docs/EVAL.md)
  python eval.py --compare=runs/a,runs/b                   # results side by side (markdown)
"""

import sys

from absl import flags

from hope_jax import cli

flags.DEFINE_string("workdir", None, "Run directory written by train.py.")
flags.DEFINE_integer("restore_step", None, "Evaluate this checkpoint instead of the latest.")
flags.DEFINE_list("data", [], "Files/directories to score instead of the validation split.")
flags.DEFINE_integer("max_batches", 0, "Cap on evaluation batches (0 = all).")
flags.DEFINE_string("prompt", None, "Sample a continuation of this text instead of scoring.")
flags.DEFINE_integer("max_new_tokens", 200, "Tokens to sample.")
flags.DEFINE_float("temperature", 0.8, "Sampling temperature (0 = greedy).")
flags.DEFINE_integer("top_k", 0, "Top-k sampling (0 = off).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_bool("recurrent", True, "Sample with KV cache / carried fast state when supported.")
flags.DEFINE_list("tasks", [], "lm-eval tasks (paper spelling: siqa = social_iqa).")
flags.DEFINE_string("task_dir", "", "Directory of local task YAMLs (offline datasets).")
flags.DEFINE_list("task_data", [], "task=file,...: the harness's own task on a local file.")
flags.DEFINE_integer("limit", 0, "lm-eval: examples per task (0 = all).")
flags.DEFINE_integer("batch_size", 8, "lm-eval: requests per batch.")
flags.DEFINE_list("suite", [], "Suites: ppl, lm_eval, niah, ppl_position, ppl_cipher, mqar, "
                  "continual, all.")
flags.DEFINE_list("niah_lengths", ["256", "512"], "NIAH context lengths (tokens).")
flags.DEFINE_list("niah_depths", ["0", "0.25", "0.5", "0.75", "1"], "NIAH needle depths.")
flags.DEFINE_integer("niah_samples", 2, "NIAH samples per (kind, length, depth).")
flags.DEFINE_integer("long_len", 0, "ppl_position / ppl_cipher document length "
                     "(0 = 4 x train length).")
flags.DEFINE_list("position_paths", [], "ppl_position on these text files / directories of *.txt "
                  "(whole files, held out); empty = the default domains' held-out tails.")
flags.DEFINE_integer("position_windows", 4, "ppl_position: evenly spaced windows per document.")
flags.DEFINE_string("mqar_config", "configs/mqar_tiny.py", "MQAR train/eval config file.")
flags.DEFINE_integer("mqar_steps", 0, "Override MQAR training steps (0 = config).")
flags.DEFINE_integer("mqar_batch", 0, "Override MQAR batch size (0 = config).")
flags.DEFINE_integer("continual_steps", 50, "Training steps per domain (continual suite).")
flags.DEFINE_list("compare", [], "Run directories whose eval/results.json to put side by side.")
FLAGS = flags.FLAGS


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_flags():
    """Usage mistakes, before anything is loaded."""
    from hope_jax.eval.suite import SUITES

    if not FLAGS.compare and not FLAGS.workdir:
        raise cli.UsageError("--workdir is required (or --compare=run_a,run_b)")
    if FLAGS.prompt is not None and not FLAGS.prompt:
        raise cli.UsageError("--prompt is empty: give the text to continue")
    unknown = [s for s in FLAGS.suite if s not in SUITES + ("all",)]
    if unknown:
        raise cli.UsageError(f"unknown --suite={unknown[0]}; choose from "
                             f"{', '.join(SUITES + ('all',))}")


def main():
    _check_flags()
    from hope_jax.eval.run import load_run, score
    from hope_jax.eval.sample import generate
    from hope_jax.sharding import initialize_distributed

    if FLAGS.compare:
        from hope_jax.eval.suite import compare

        out = compare(FLAGS.compare)
        print(out["markdown"], file=sys.stderr)
        return out["runs"]
    cfg = cli.load_workdir_config(FLAGS.workdir)
    initialize_distributed(cfg.mesh)  # multi-host: before any device use
    run = load_run(cfg, FLAGS.workdir, FLAGS.restore_step)
    if FLAGS.prompt is not None:
        ids = run.tokenizer.encode(FLAGS.prompt)
        out = generate(run.model, run.params, ids, FLAGS.max_new_tokens,
                       temperature=FLAGS.temperature, top_k=FLAGS.top_k, seed=FLAGS.seed,
                       stop_id=run.tokenizer.eos_id, recurrent=FLAGS.recurrent)
        return {"step": run.step, "prompt": FLAGS.prompt, "completion": run.tokenizer.decode(out)}
    suites = list(FLAGS.suite) or (["lm_eval"] if FLAGS.tasks else [])
    if not suites:
        return score(run, tuple(FLAGS.data), FLAGS.max_batches)
    from hope_jax.eval.suite import SuiteOptions, markdown_report, run_suite
    from hope_jax.eval.tables import markdown_table

    opts = SuiteOptions(
        tasks=tuple(FLAGS.tasks), task_dir=FLAGS.task_dir, limit=FLAGS.limit,
        task_data=tuple(FLAGS.task_data),
        batch_size=FLAGS.batch_size, niah_lengths=tuple(int(x) for x in FLAGS.niah_lengths),
        niah_depths=tuple(float(x) for x in FLAGS.niah_depths), niah_samples=FLAGS.niah_samples,
        long_len=FLAGS.long_len, position_paths=tuple(FLAGS.position_paths),
        position_windows=FLAGS.position_windows, mqar_config=FLAGS.mqar_config,
        mqar_steps=FLAGS.mqar_steps, mqar_batch=FLAGS.mqar_batch,
        continual_steps=FLAGS.continual_steps, max_batches=FLAGS.max_batches or 8)
    res = run_suite(run, FLAGS.workdir, suites, opts, _log)
    if "lm_eval" in res:
        print(markdown_table({cfg.model.name: res["lm_eval"]["table"]}), file=sys.stderr)
    print(markdown_report({cfg.model.name: res}), file=sys.stderr)
    return res


if __name__ == "__main__":
    cli.run(main)
