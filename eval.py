"""Evaluate a trained run: loss / perplexity / bits-per-byte, or sample text from a prompt.

  python eval.py --workdir=runs/tiny                       # validation split of the run's data
  python eval.py --workdir=runs/tiny --data=my.txt,more/   # given files or directories
  python eval.py --workdir=runs/tiny --prompt="def main(" --max_new_tokens=200 --temperature=0.8
"""

from absl import app, flags, logging

from hope_jax import cli

flags.DEFINE_string("workdir", None, "Run directory written by train.py.", required=True)
flags.DEFINE_list("data", [], "Files/directories to score instead of the validation split.")
flags.DEFINE_integer("max_batches", 0, "Cap on evaluation batches (0 = all).")
flags.DEFINE_string("prompt", None, "Sample a continuation of this text instead of scoring.")
flags.DEFINE_integer("max_new_tokens", 200, "Tokens to sample.")
flags.DEFINE_float("temperature", 0.8, "Sampling temperature (0 = greedy).")
flags.DEFINE_integer("top_k", 0, "Top-k sampling (0 = off).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
FLAGS = flags.FLAGS


def _main():
    from hope_jax.eval.run import load_run, score
    from hope_jax.eval.sample import generate
    from hope_jax.sharding import initialize_distributed

    cfg = cli.load_workdir_config(FLAGS.workdir)
    initialize_distributed(cfg.mesh)  # multi-host: before any device use
    run = load_run(cfg, FLAGS.workdir)
    if FLAGS.prompt is not None:
        ids = run.tokenizer.encode(FLAGS.prompt)
        out = generate(run.model, run.params, ids, FLAGS.max_new_tokens,
                       temperature=FLAGS.temperature, top_k=FLAGS.top_k, seed=FLAGS.seed,
                       stop_id=run.tokenizer.eos_id)
        return {"step": run.step, "prompt": FLAGS.prompt, "completion": run.tokenizer.decode(out)}
    return score(run, tuple(FLAGS.data), FLAGS.max_batches)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every file operation at INFO
    cli.print_json(cli.run_guarded(_main))


if __name__ == "__main__":
    app.run(main)
