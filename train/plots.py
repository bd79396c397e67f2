"""PNG plots of a run from its `metrics.jsonl`: loss curves, dev scores, PCGrad cosines."""

from __future__ import annotations

import collections
import io

import matplotlib

matplotlib.use("Agg")  # no display on training boxes
import matplotlib.pyplot as plt  # noqa: E402

from train import storage  # noqa: E402
from train.metric_writer import read_metrics  # noqa: E402


def _series(rows, kind, prefix):
  series = collections.defaultdict(lambda: ([], []))
  for row in rows:
    if row["kind"] != kind:
      continue
    for name, value in row.items():
      if name.startswith(prefix):
        series[name[len(prefix):]][0].append(row["step"])
        series[name[len(prefix):]][1].append(value)
  return series


def _save(fig, path: str) -> str:
  """The figure as a PNG at `path`, on any filesystem (train/storage.py)."""
  png = io.BytesIO()
  fig.savefig(png, format="png", dpi=100)
  plt.close(fig)
  storage.write_bytes(path, png.getvalue())
  return path


def plot_run(workdir: str) -> list[str]:
  """Writes training_curves.png (and gradient_conflicts.png with PCGrad); returns the paths."""
  rows = read_metrics(storage.join(workdir, "metrics.jsonl"))
  written = []
  fig, (ax_loss, ax_dev) = plt.subplots(1, 2, figsize=(12, 4.5))
  for task, (steps, values) in sorted(_series(rows, "train", "loss/").items()):
    ax_loss.plot(steps, values, label=task)
  ax_loss.set(title="training loss", xlabel="step", yscale="log")
  ax_loss.legend()
  for name, (steps, values) in sorted(_series(rows, "eval", "dev/").items()):
    ax_dev.plot(steps, values, marker="o", label=name)
  ax_dev.set(title="dev scores", xlabel="step")
  ax_dev.legend(fontsize=8)
  fig.tight_layout()
  written.append(_save(fig, storage.join(workdir, "training_curves.png")))

  cosines = _series(rows, "train", "pcgrad/cosine/")
  if cosines:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for pair, (steps, values) in sorted(cosines.items()):
      ax.plot(steps, values, label=pair)
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set(title="cosine between task gradients (< 0: conflict, PCGrad projects)", xlabel="step")
    ax.legend()
    fig.tight_layout()
    written.append(_save(fig, storage.join(workdir, "gradient_conflicts.png")))
  return written
