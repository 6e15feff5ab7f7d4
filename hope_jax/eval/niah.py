"""RULER-style single needle-in-a-haystack (S-NIAH-1/2/3, SPEC §6.3) and the length x depth grid.

  S-NIAH-1 (`passkey`): a 7-digit pass key in repeated noise sentences;
  S-NIAH-2 (`number`):  a 7-digit magic number in a real haystack (essay / corpus text);
  S-NIAH-3 (`uuid`):    a UUID in a real haystack.

The needle "One of the special magic {kind}s for {key} is: {value}." is inserted at a relative
depth (0 = start, 1 = end) at a sentence boundary; the prompt ends with the RULER query and answer
prefix, and a prediction scores 1 iff it contains the value (RULER `string_match_all`). Lengths are
in tokens of the given tokenizer (the haystack is cut to fit). Everything is deterministic in
(seed, kind, length, depth, sample index).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hope_jax.data.retrieval import KINDS, NOISE, make_sample

__all__ = ["KINDS", "NOISE", "make_sample", "plot_heatmaps", "run_grid", "score"]


def score(prediction: str, answer: str) -> float:
    """1.0 iff the answer string occurs in the prediction (RULER string match)."""
    return float(answer in prediction)


def run_grid(generate: Callable[[str, int], str], tokenizer, kinds=KINDS, lengths=(256, 512),
             depths=(0.0, 0.25, 0.5, 0.75, 1.0), samples: int = 2, seed: int = 0,
             haystack: str | None = None) -> dict:
    """Accuracy (percent) per kind, length and depth.

    Args:
      generate: `(prompt, max_new_tokens) -> continuation text` (greedy).
      tokenizer: the model's tokenizer.

    Returns:
      {"kinds": {kind: {"acc": [[len x depth]], "mean_by_length": [...]}}, "lengths", "depths"}.
    """
    out = {"lengths": list(lengths), "depths": list(depths), "kinds": {}}
    for kind in kinds:
        grid = np.zeros((len(lengths), len(depths)))
        for i, n in enumerate(lengths):
            for j, d in enumerate(depths):
                accs = []
                for s in range(samples):
                    ex = make_sample(kind, n, d, seed * 1000 + s, tokenizer, haystack)
                    max_new = len(tokenizer.encode(" " + ex["answer"])) + 2
                    accs.append(score(generate(ex["prompt"], max_new), ex["answer"]))
                grid[i, j] = 100.0 * float(np.mean(accs))
        out["kinds"][kind] = {"acc": grid.tolist(), "mean_by_length": grid.mean(1).tolist(),
                              "mean": float(grid.mean())}
    return out


def plot_heatmaps(res: dict, path: str, title: str = "") -> str:
    """One length x depth accuracy heatmap per kind, side by side, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(res["kinds"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.2), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        grid = np.asarray(res["kinds"][kind]["acc"])
        im = ax.imshow(grid, vmin=0, vmax=100, cmap="RdYlGn", aspect="auto")
        ax.set_xticks(range(len(res["depths"])), [f"{d:.0%}" for d in res["depths"]])
        ax.set_yticks(range(len(res["lengths"])), res["lengths"])
        ax.set_xlabel("needle depth")
        ax.set_ylabel("context length (tokens)")
        ax.set_title(f"{title} S-NIAH {kind}".strip())
        for (i, j), v in np.ndenumerate(grid):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
