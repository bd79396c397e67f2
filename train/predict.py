r"""Predict (and, given labels, evaluate) one task with a trained model.

  python -m train.predict --model=workdirs/default --task=sst \
      --input=../shared/data/cs224n/ids-sst-test-student.csv --output=sst-test-output.csv
  python -m train.predict --model=workdirs/default --task=sts --input=../shared/data/cs224n/sts-dev.csv
  printf 'A man sings.\tA man is singing.\n' | python -m train.predict --model=workdirs/default --task=sts
  echo 'A quiet triumph.' | python -m train.predict --model=workdirs/default --task=sst --format=jsonl

--model is a model bundle or a workdir (its model/ bundle, else its best
checkpoint and results.json). --input is a course-format file (tab-separated,
a header with id and sentence / sentence1, sentence2 columns, and optionally the
label column), read by the same strict reader as training, so a bad row is
reported as file:line:column; without --input, stdin is read as plain text: one
sentence, or one tab-separated pair, per line (ids are line numbers; blank
lines are skipped). Output goes to --output (default stdout) in the course's
submission format or, with --format=jsonl, one JSON object per example: id,
prediction, and the 5 class probabilities (sst) or the paraphrase probability
(para).

The input is tokenized, packed and batched as the run's own evaluation was
(same max_length, batch size, packing, length buckets and parallel mode, from
the bundle), so evaluating a run's dev file gives exactly the scores the run
reported. When the input has labels the task metric is printed (accuracy, or
Pearson r for sts), with the throughput.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from absl import app, flags, logging

from bert_jax.tasks import TASKS  # a module without imports: --help stays fast

STDIN_NAME = "<stdin>"


@dataclasses.dataclass
class Predictions:
  """One task's predictions for a file, in file order."""
  task: str
  ids: list[str]
  predictions: Any  # [N]: int classes (sst), 0/1 (para), similarity in [0, 5] (sts)
  outputs: Any  # [N, 5] sst logits, [N] para logits, [N] sts raw similarity
  score: float | None  # the task metric, when the input has labels
  seconds: float  # wall time of batching and the model, compilation included

  @property
  def num_sentences(self) -> int:
    return len(self.ids) * (1 if self.task == "sst" else 2)


# ----------------------------------------------------------------------------- reading inputs


def _course_specs(task: str):
  from data_prep.builders import cs224n_quora, cs224n_sst, cs224n_sts  # pylint: disable=import-outside-toplevel
  module = {"sst": cs224n_sst, "para": cs224n_quora, "sts": cs224n_sts}[task]
  return module.LABELED, module.UNLABELED


def read_course_file(path: str, task: str, *, skip_bad_rows: bool = False) -> tuple[list[dict], bool]:
  """Example dicts of a course-format file, and whether it is labeled (has the label column).

  Read with the training data's own `TableSpec`s, so errors name file, line and column.
  """
  import csv  # pylint: disable=import-outside-toplevel
  from data_prep import csv_rows  # pylint: disable=import-outside-toplevel
  labeled_spec, unlabeled_spec = _course_specs(task)
  with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
    header = [name.strip() for name in next(csv.reader(f, delimiter="\t"), [])]
  labeled = labeled_spec.label.column in header
  report = csv_rows.read_table(path, labeled_spec if labeled else unlabeled_spec, skip_bad_rows=skip_bad_rows)
  if report.num_skipped:
    logging.warning("%s: skipped %d bad row(s), which get no prediction:\n  %s", path, report.num_skipped,
                    "\n  ".join(f"line {line}: {message}" for line, message in report.skipped_lines))
    print(f"{path}: skipped {report.num_skipped} bad row(s) (no prediction for them): "
          + ", ".join(f"line {line}" for line, _ in report.skipped_lines), file=sys.stderr)
  return [_example(task, row.id, row.texts, row.label if labeled else None) for row in report.rows], labeled


def read_text_lines(stream: TextIO, task: str, name: str = STDIN_NAME) -> list[dict]:
  """Example dicts of plain text: a sentence (sst) or a tab-separated pair per line; ids = line numbers."""
  from data_prep.errors import DataError  # pylint: disable=import-outside-toplevel
  examples = []
  for line_number, line in enumerate(stream, start=1):
    line = line.rstrip("\r\n")
    if not line.strip():
      continue
    texts = (line.strip(),) if task == "sst" else tuple(part.strip() for part in line.split("\t"))
    if len(texts) != (1 if task == "sst" else 2) or not all(texts):
      raise DataError(name, line_number, f"expected two non-empty sentences separated by one tab for "
                      f"--task={task}, found {len(texts)} field(s): {line[:80]!r}")
    examples.append(_example(task, str(line_number), texts, None))
  return examples


def _example(task: str, example_id: str, texts: Sequence[str], label) -> dict:
  from data_prep.builders.base import UNLABELED  # pylint: disable=import-outside-toplevel
  example = {"id": example_id, "label": UNLABELED if label is None else label}
  if task == "sst":
    example["sentence"] = texts[0]
  else:
    example["sentence1"], example["sentence2"] = texts
  return example


# ----------------------------------------------------------------------------- predicting


def predict_examples(trained, task: str, examples: list[dict], *, labeled: bool, batch_size: int = 0,
                     source: str = "input") -> Predictions:
  """Predictions for `examples`, batched exactly as the trained run's evaluation batched its dev set.

  `trained` is a `bert_jax.bundle.Bundle` (e.g. from `train.trained_run.load_trained`).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from bert_jax import heads  # pylint: disable=import-outside-toplevel
  from bert_jax import losses as losses_lib  # pylint: disable=import-outside-toplevel
  from data_prep import bucketing, tokenized  # pylint: disable=import-outside-toplevel
  from data_prep.packing import PackingSpec  # pylint: disable=import-outside-toplevel
  from train import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  from train import steps  # pylint: disable=import-outside-toplevel
  from train.data import TaskData  # pylint: disable=import-outside-toplevel
  from train.parallel import DataParallel  # pylint: disable=import-outside-toplevel

  evaluation = trained.metadata.get("evaluation") or {}
  max_length = int(evaluation.get("max_length") or trained.max_length)
  batch_size = batch_size or int(evaluation.get("eval_batch_size") or 128)
  model = trained.model
  pair_encoding = {"sst": "separate", "para": heads.pair_encoding(model.paraphrase_head),
                   "sts": heads.pair_encoding(model.similarity_head)}[task]
  tokenizer = trained.tokenizer
  start = time.perf_counter()
  encoded = tokenized.encode_examples(
      examples, tokenizer, name=f"{task}:{source}", pair=task != "sst",
      pair_encoding=pair_encoding if task != "sst" else None, max_length=max_length, labeled=labeled,
      special=tokenized.SpecialIds(pad=tokenizer.pad_id, cls=tokenizer.cls_id, sep=tokenizer.sep_id),
      provenance=({"file": source},))
  num_outputs = (len(examples), model.num_sentiment_classes) if task == "sst" else (len(examples),)
  outputs = np.zeros(num_outputs, np.float32)
  if examples:
    recorded_buckets = (evaluation.get("buckets") or {}).get(task)
    buckets = tuple(recorded_buckets) if recorded_buckets else bucketing.choose_bucket_lengths(
        encoded.lengths, max_length=max_length)
    packing = evaluation.get("packing")
    data = TaskData(splits={task: {"input": encoded}}, buckets={task: buckets}, quora_split="",
                    packing=PackingSpec(tuple(packing["pack_lengths"]), int(packing["row_multiple"]))
                    if packing else None)
    parallel_settings = evaluation.get("parallel") or {}
    parallel = DataParallel.create(parallel_settings.get("mode", "jit"), parallel_settings.get("num_devices", 0))
    packing_spec = data.packing_spec(num_devices=parallel.num_devices)
    fn = parallel.compile_predict_step(steps.make_predict_step(model, task))
    params = parallel.replicate(jax.tree.map(np.asarray, trained.params))
    answered = np.zeros(len(examples), bool)
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel
    num_batches = -(-len(examples) // batch_size)
    batches = data.eval_batches(task, "input", batch_size, parallel.num_devices, packing=packing_spec)
    for batch in tqdm(batches, total=num_batches, desc=f"{task} predict", unit="batch",
                      disable=num_batches < 8, file=sys.stderr):
      batch_outputs = np.asarray(parallel.gather(fn(params, parallel.put_batch(batch))))
      real = batch["weights"] > 0
      outputs[batch["index"][real]] = batch_outputs[real]
      answered[batch["index"][real]] = True
    if not answered.all():
      raise RuntimeError(f"{source}: {int((~answered).sum())} of {len(examples)} examples got no prediction")
  predictions = np.asarray(losses_lib.predict(task, outputs))
  seconds = time.perf_counter() - start
  score = None
  if labeled and examples:
    score = metrics_lib.task_score(task, predictions, np.asarray(encoded.labels))
  return Predictions(task, [str(i) for i in encoded.ids], predictions, outputs, score, seconds)


# ----------------------------------------------------------------------------- writing outputs


def write_jsonl(stream: TextIO, result: Predictions) -> None:
  import numpy as np  # pylint: disable=import-outside-toplevel
  if result.task == "sst":
    logits = result.outputs - result.outputs.max(axis=-1, keepdims=True) if len(result.ids) else result.outputs
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
  for i, example_id in enumerate(result.ids):
    row = {"id": example_id}
    if result.task == "sst":
      row["prediction"] = int(result.predictions[i])
      row["probabilities"] = [round(float(p), 6) for p in probabilities[i]]
    elif result.task == "para":
      row["prediction"] = int(result.predictions[i])
      row["probability"] = round(float(1.0 / (1.0 + np.exp(-result.outputs[i]))), 6)
    else:
      row["prediction"] = round(float(result.predictions[i]), 6)
    stream.write(json.dumps(row) + "\n")


def write_output(result: Predictions, output: str | None, output_format: str) -> None:
  """Predictions to `output` (a file; None: stdout) as submission lines or JSON lines."""
  import tempfile  # pylint: disable=import-outside-toplevel
  from train import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  if output_format == "submission":
    if output:
      metrics_lib.write_submission(output, result.task, result.ids, result.predictions)
      return
    with tempfile.TemporaryDirectory() as scratch:  # one writer of the course format: write_submission
      path = pathlib.Path(scratch, "predictions.csv")
      metrics_lib.write_submission(str(path), result.task, result.ids, result.predictions)
      sys.stdout.write(path.read_text(encoding="utf-8"))
    sys.stdout.flush()
    return
  if not output:
    write_jsonl(sys.stdout, result)
    sys.stdout.flush()
    return
  pathlib.Path(output).parent.mkdir(parents=True, exist_ok=True)
  with open(output, "w", encoding="utf-8") as f:
    write_jsonl(f, result)


def summary_lines(result: Predictions) -> list[str]:
  """What the user reads at the end: the metric (when labeled) and the throughput."""
  from train import metrics as metrics_lib  # pylint: disable=import-outside-toplevel
  lines = []
  if result.score is not None:
    # Full precision: the number to compare with the run's results.json.
    lines.append(f"{metrics_lib.TASK_METRIC[result.task]} = {result.score} on {len(result.ids)} labeled examples")
  rate = result.num_sentences / result.seconds if result.seconds > 0 else 0.0
  lines.append(f"predicted {len(result.ids)} examples ({result.num_sentences} sentences) in "
               f"{result.seconds:.2f} s: {rate:.1f} sentences/s (compilation included)")
  return lines


def define_flags() -> None:
  """The CLI's flags, defined only when it runs (tests import this module beside others' flags)."""
  flags.DEFINE_string("model", None, "A model bundle directory, or a training workdir.")
  flags.DEFINE_enum("task", None, list(TASKS), "sst (sentiment), para (paraphrase) or sts (similarity).")
  flags.DEFINE_string("input", None, "A course-format CSV/TSV; default (or '-'): plain text on stdin.")
  flags.DEFINE_enum("input_format", None, ["course", "text"],
                    "course: tab-separated with a header (default for --input files); text: one sentence "
                    "or one tab-separated pair per line (default for stdin).")
  flags.DEFINE_string("output", None, "Where predictions go; default stdout.")
  flags.DEFINE_enum("format", "submission", ["submission", "jsonl"],
                    "submission: the course's files (id , prediction); jsonl: one JSON object a line.")
  flags.DEFINE_integer("batch_size", 0, "Examples per batch; 0 = the run's eval_batch_size.")
  flags.DEFINE_bool("skip_bad_rows", False, "Skip (and list) malformed input rows instead of stopping at the first.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  args = flags.FLAGS
  if args.model is None or args.task is None:
    raise app.UsageError("--model and --task are required")
  if not args["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every file it touches at INFO
  from train import trained_run  # pylint: disable=import-outside-toplevel  (after flags: --help stays fast)
  trained = trained_run.load_trained(args.model)
  task = args.task
  from_stdin = args.input in (None, "", "-")
  input_format = args.input_format or ("text" if from_stdin else "course")
  source = STDIN_NAME if from_stdin else args.input
  if input_format == "course":
    if from_stdin:
      raise app.UsageError("--input_format=course needs an --input file")
    examples, labeled = read_course_file(args.input, task, skip_bad_rows=args.skip_bad_rows)
  elif from_stdin:
    examples, labeled = read_text_lines(sys.stdin, task), False
  else:
    with open(args.input, encoding="utf-8") as f:
      examples, labeled = read_text_lines(f, task, name=args.input), False
  result = predict_examples(trained, task, examples, labeled=labeled, batch_size=args.batch_size, source=source)
  write_output(result, args.output, args.format)
  # On stderr when the predictions are on stdout, so they stay machine-readable.
  report = sys.stdout if args.output else sys.stderr
  for line in summary_lines(result):
    print(line, file=report, flush=True)


def run() -> None:
  """Console-script entry point (`bert-jax-predict`)."""
  from train import script_help  # pylint: disable=import-outside-toplevel
  script_help.run_script(__name__, define_flags, main)


if __name__ == "__main__":
  run()
