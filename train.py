"""Train a hope_jax language model.

  python train.py --workdir=runs/tiny                                  # default config
  python train.py --config=configs/transformer_tiny.py --config.train.steps=1000 --workdir=runs/x

Resumes automatically from the latest checkpoint in --workdir.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from hope_jax import cli

config_flags.DEFINE_config_file("config", cli.DEFAULT_CONFIG, "Config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", "runs/default", "Run directory (checkpoints, metrics, config).")
flags.DEFINE_integer("stop_after", None, "Stop with a checkpoint after this many total steps.")
FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every file operation at INFO
    from hope_jax.sharding import initialize_distributed
    from hope_jax.train.loop import train

    cfg = cli.load_config(FLAGS.config)
    cli.run_guarded(initialize_distributed, cfg.mesh)  # multi-host: before any device use
    summary = cli.run_guarded(train, cfg, FLAGS.workdir, stop_after=FLAGS.stop_after)
    cli.print_json(summary)


if __name__ == "__main__":
    app.run(main)
