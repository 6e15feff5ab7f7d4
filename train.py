"""Train a hope_jax language model.

  python train.py --workdir=runs/tiny                                  # default config
  python train.py --config=configs/transformer_tiny.py --config.train.steps=1000 --workdir=runs/x

Resumes automatically from the latest checkpoint in --workdir (--restore_step=N: from step N).
Prints the JSON summary on stdout; progress and messages go to stderr; a bad input is one
`error: ...` line (--verbose for the traceback).
"""

from absl import flags
from ml_collections import config_flags

from hope_jax import cli

config_flags.DEFINE_config_file("config", cli.DEFAULT_CONFIG, "Config file (configs/*.py).",
                                lock_config=True)
flags.DEFINE_string("workdir", "runs/default", "Run directory (checkpoints, metrics, config).")
flags.DEFINE_integer("stop_after", None, "Stop with a checkpoint after this many total steps.")
flags.DEFINE_integer("restore_step", None, "Resume from this checkpoint instead of the latest "
                     "(newer ones are moved to checkpoints_aside/).")
FLAGS = flags.FLAGS


def main():
    from hope_jax.config import validate
    from hope_jax.sharding import initialize_distributed
    from hope_jax.train.loop import train

    cfg = validate(FLAGS.config)
    initialize_distributed(cfg.mesh)  # multi-host: before any device use
    return train(cfg, FLAGS.workdir, stop_after=FLAGS.stop_after, restore_step=FLAGS.restore_step)


if __name__ == "__main__":
    cli.run(main)
