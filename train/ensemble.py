r"""Average several trained runs into one prediction: dev scores and the course's submission files.

  python -m train.ensemble --models=workdirs/seed0,workdirs/seed1,workdirs/seed2 --out=ensembles/default

Each --models entry is a workdir (its model/ bundle) or a bundle directory. Every
member predicts every dev and test example with the batching of its own run's
evaluation; the ensemble averages what the members believe, not their votes:
  SST   the mean of the members' class probabilities, then the most probable class;
  Para  the mean of their paraphrase probabilities, then probability > 1/2;
  STS   the mean of their (unclipped) similarities, then clipped to [0, 5].
--out receives predictions/{sst,para,sts}-{dev,test}-output.csv in the course's
format, results.json (the ensemble's dev scores, each member's, the members) and
results.txt (the table it prints).

Members must have been evaluated on the same dev examples: the same data
(`data.quora_split` decides which Quora pairs are dev), checked id by id. The
test labels are never read; those files are scored elsewhere.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence

from absl import app, flags, logging

from bert_jax.tasks import TASKS  # a module without imports: --help stays fast

SCORE_LINES = (("sst_accuracy", "SST acc"), ("para_accuracy", "Para acc"), ("sts_pearson", "STS r"),
               ("overall_mean", "overall"), ("overall_cs224n", "CS224N"))


class EnsembleError(ValueError):
  """Members that cannot be averaged; the message names the member and what differs."""


def combine(task: str, outputs: Sequence) -> "np.ndarray":
  """One raw output per example from the members' raw outputs, in the form `losses.predict` reads.

  SST: log of the mean softmax (its argmax is the most probable class on average);
  Para: the logit of the mean sigmoid; STS: the mean similarity.
  """
  import numpy as np  # pylint: disable=import-outside-toplevel
  stacked = np.stack([np.asarray(o, np.float64) for o in outputs])
  if task == "sst":
    shifted = stacked - stacked.max(axis=-1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    return np.log(probabilities.mean(axis=0)).astype(np.float32)
  if task == "para":
    probability = (1.0 / (1.0 + np.exp(-stacked))).mean(axis=0)
    probability = np.clip(probability, 1e-12, 1.0 - 1e-12)
    return np.log(probability / (1.0 - probability)).astype(np.float32)
  return stacked.mean(axis=0).astype(np.float32)


def _member(path: str, data_root: str | None):
  """(name, Evaluator, params, TaskData) of one member, its data built from its own run's config."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel

  from train import evaluation, trained_run  # pylint: disable=import-outside-toplevel
  from train.data import TaskData  # pylint: disable=import-outside-toplevel
  from train.parallel import DataParallel  # pylint: disable=import-outside-toplevel

  bundle = trained_run.load_trained(path)
  recorded = (bundle.metadata.get("training") or {}).get("config")
  if not recorded:
    raise EnsembleError(f"{path}: its bundle records no training config, so its dev data cannot be rebuilt")
  config = ml_collections.ConfigDict(recorded)
  if data_root is not None:
    config.data.data_root = data_root
  data = TaskData.create(config, bundle.tokenizer)
  settings = bundle.metadata.get("evaluation") or {}
  parallel = DataParallel.create("jit", 0)
  evaluator = evaluation.Evaluator(bundle.model, data, parallel,
                                   int(settings.get("eval_batch_size") or config.eval_batch_size))
  return str(path), evaluator, jax.tree.map(jnp.asarray, bundle.params), data


def _check_same_examples(members) -> None:
  first_name, _, _, first = members[0]
  for name, _, _, data in members[1:]:
    for task in TASKS:
      for split in ("validation", "test"):
        if list(data.ids(task, split)) != list(first.ids(task, split)):
          raise EnsembleError(
              f"{name} was evaluated on other {task} {split} examples than {first_name} (a different "
              f"data.quora_split or data files?); an ensemble needs the same examples in every member")


def ensemble(models: Sequence[str], out: str | os.PathLike, *, data_root: str | None = None) -> dict:
  """Scores the average of `models` on dev, writes the submission files to `out`; returns results.json."""
  from train import evaluation  # pylint: disable=import-outside-toplevel

  if len(models) < 2:
    raise EnsembleError(f"--models lists {len(models)} model(s); an ensemble needs at least 2")
  members = [_member(path, data_root) for path in models]
  _check_same_examples(members)
  cache: dict[tuple[str, str], list] = {}

  def member_outputs(task: str, split: str) -> list:
    if (task, split) not in cache:
      cache[task, split] = [evaluator.outputs(params, task, split) for _, evaluator, params, _ in members]
    return cache[task, split]

  out = pathlib.Path(out)
  predictions_dir = out / "predictions"
  predictions_dir.mkdir(parents=True, exist_ok=True)
  data = members[0][3]
  scores = evaluation.score_and_write(data, lambda task, split: combine(task, member_outputs(task, split)),
                                      out_dir=str(predictions_dir))
  member_scores = [evaluation.score_and_write(data, lambda task, split, i=i: member_outputs(task, split)[i])
                   for i in range(len(members))]
  results = {"members": [name for name, *_ in members], "scores": scores, "member_scores": member_scores}
  (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
  table = format_table(results)
  (out / "results.txt").write_text(table + "\n")
  return results


def format_table(results: dict) -> str:
  header = f"{'':<40}" + "".join(f"{label:>10}" for _, label in SCORE_LINES)
  lines = [header, "-" * len(header)]
  for name, scores in zip(results["members"], results["member_scores"]):
    shown = name if len(name) <= 38 else "..." + name[-35:]
    lines.append(f"{shown:<40}" + "".join(f"{scores[key]:>10.4f}" for key, _ in SCORE_LINES))
  lines.append(f"{'ensemble (dev)':<40}" + "".join(f"{results['scores'][key]:>10.4f}" for key, _ in SCORE_LINES))
  return "\n".join(lines)


def define_flags() -> None:
  flags.DEFINE_list("models", None, "Workdirs or model bundles of the members, comma-separated (at least 2).")
  flags.DEFINE_string("out", None, "Where predictions/, results.json and results.txt go.")
  flags.DEFINE_string("data_root", None, "The course data, if not where the members' runs found it "
                      "(default: their config, else $BERT_JAX_DATA).")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  if not args.models or not args.out:
    raise app.UsageError("--models and --out are required")
  if not args["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  try:
    results = ensemble(args.models, args.out, data_root=args.data_root)
  except EnsembleError as e:
    raise app.UsageError(str(e)) from None
  print(format_table(results))
  print(f"wrote {os.path.join(args.out, 'predictions')}/{{sst,para,sts}}-{{dev,test}}-output.csv")


def run() -> None:
  """Console-script entry point (`bert-jax-ensemble`)."""
  from train import script_help  # pylint: disable=import-outside-toplevel
  script_help.run_script(__name__, define_flags, main)


if __name__ == "__main__":
  run()
