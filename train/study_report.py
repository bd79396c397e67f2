"""A study's report: RESULTS.md, results.csv, results.json and plots, from the runs' own files.

Everything is read back from each run's workdir, or from its archive beside the
report when the workdir is gone (results.json for the scores, study_run.json for
the wall time, metrics.jsonl for the curves), never from the
runner's memory, so `--collect_only` rebuilds the same report from the same
files. Ours are the mean and sample standard deviation over seeds, with n, in the
reports' columns (overall = plain mean of SST acc, Para acc and STS r), and the
report's own numbers stand beside them. What a person concluded from the tables
goes in CONCLUSIONS.md beside RESULTS.md: the report includes it and never
writes it, so the conclusions survive every rebuild.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import datetime
import json
import math
import os
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # no display on training boxes
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from train.study_spec import Row, Study  # noqa: E402

# (report column, results.json score key, header)
COLUMNS = (("overall", "overall_mean", "overall"), ("sst", "sst_accuracy", "SST acc"),
           ("para", "para_accuracy", "Para acc"), ("sts", "sts_pearson", "STS r"))
SCORE_KEYS = tuple(key for _, key, _ in COLUMNS) + ("overall_cs224n",)
CONCLUSIONS = "CONCLUSIONS.md"  # in the report directory: what a person concluded, kept across rebuilds
DEV_CURVES = (("overall_mean", "overall (mean)"), ("sst_accuracy", "SST accuracy"),
              ("para_accuracy", "Para accuracy"), ("sts_pearson", "STS Pearson r"))


@dataclasses.dataclass
class RunRecord:
  """What the runner knows of one (row, seed); the scores are read from `workdir`."""
  row: Row
  seed: int
  workdir: str
  command: str
  state: str  # "done", "stale", "partial", "failed", "pending"
  detail: str = ""
  wall_s: float | None = None
  reused_from: str | None = None  # the other study's run this one was copied from (--reuse_from)


@dataclasses.dataclass
class RowSummary:
  row: Row
  runs: list[dict]  # one per seed: {"seed", "state", "scores", ...}
  mean: dict[str, float]
  sd: dict[str, float | None]
  n: int
  wall_s_mean: float | None


def _read_results(workdir: str) -> dict | None:
  path = os.path.join(workdir, "results.json")
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def summarize(study: Study, runs: Sequence[RunRecord]) -> list[RowSummary]:
  """Per row: every run's scores as results.json has them, and their mean, sd and n over finished seeds."""
  by_row = collections.defaultdict(list)
  for run in runs:
    by_row[run.row.name].append(run)
  summaries = []
  for row in study.rows:
    entries = []
    for run in sorted(by_row.get(row.name, []), key=lambda r: r.seed):
      results = _read_results(run.workdir) if run.state == "done" else None
      entries.append({"seed": run.seed, "state": run.state, "detail": run.detail, "workdir": run.workdir,
                      "command": run.command, "wall_s": run.wall_s, "reused_from": run.reused_from,
                      "scores": {k: results["scores"][k] for k in SCORE_KEYS} if results else None,
                      "best_stage": results.get("best_stage") if results else None})
    finished = [e for e in entries if e["scores"] is not None]
    mean, sd = {}, {}
    for key in SCORE_KEYS:
      values = np.asarray([e["scores"][key] for e in finished], np.float64)
      mean[key] = float(values.mean()) if len(values) else None
      sd[key] = float(values.std(ddof=1)) if len(values) >= 2 else None
    walls = [e["wall_s"] for e in finished if e["wall_s"]]
    summaries.append(RowSummary(row, entries, mean, sd, len(finished),
                                float(np.mean(walls)) if walls else None))
  return summaries


# ---- formatting ------------------------------------------------------------------------------------

def _mean_sd(summary: RowSummary, key: str) -> str:
  if summary.mean[key] is None:
    return "—"
  if summary.sd[key] is None:
    return f"{summary.mean[key]:.3f}"
  return f"{summary.mean[key]:.3f} ± {summary.sd[key]:.3f}"


def _minutes(seconds: float | None) -> str:
  return "—" if seconds is None else f"{seconds / 60:.1f} min"


def _data_line(summaries: Sequence[RowSummary]) -> str:
  """What ours were computed on, from the first finished run's results.json."""
  for summary in summaries:
    for entry in summary.runs:
      results = _read_results(entry["workdir"]) if entry["scores"] else None
      if results:
        config, data = results.get("config", {}), results.get("data", {})
        sizes = {t: s.get("train", {}).get("examples") for t, s in data.get("splits", {}).items()}
        return (f"Ours: checkpoint `{config.get('checkpoint')}`, dtype {config.get('dtype')}, Quora split "
                f"`{data.get('quora_split')}`, training examples {sizes} (the first finished run; rows "
                f"with extra data have more), dev scores of each run's best checkpoint.")
  return "Ours: no run has finished yet."


def _time_line(summaries: Sequence[RowSummary], n_done: int, n_runs: int) -> str:
  """What the finished runs took and what the rest would take at that rate, from the runs themselves."""
  walls = [(s.wall_s_mean, s.n) for s in summaries if s.n and s.wall_s_mean]
  resume = ("rerunning the command resumes the study, on another machine too: every finished run's results "
            "and curves are kept in `runs/` beside this file.")
  if not walls:
    return "No run has finished yet; " + resume
  mean = sum(w * n for w, n in walls) / sum(n for _, n in walls)
  left = n_runs - n_done
  return (f"The finished runs took {mean / 60:.0f} min each on average (wall time, on a machine that may have "
          f"been running other work too), so the {left} left would take about {left * mean / 3600:.1f} h at "
          f"that rate; " + resume)


def results_markdown(study: Study, summaries: Sequence[RowSummary], invocation: str,
                     conclusions: str | None = None, conflict: Sequence[dict[str, Any]] = ()) -> str:
  """RESULTS.md; `conclusions` (the report directory's CONCLUSIONS.md, written by a person) follows the table."""
  label = study.report_label
  lines = [f"# {study.title}", ""]
  if study.source:
    lines += [study.source, ""]
  n_done = sum(s.n for s in summaries)
  n_runs = sum(len(s.runs) for s in summaries)
  lines += [f"Written {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} by `{invocation}` "
            f"({n_done} of {n_runs} runs finished; rerun the same command to continue).", ""]
  budget = study.budget
  longer = [f"{s.row.title} (x{s.row.epochs_factor:g})" for s in summaries if s.row.epochs_factor != 1]
  lines += [f"**Budget, the same for every row:** `num_epochs={budget.num_epochs}`"
            + (f", at most {budget.max_train_examples} training examples (max_steps from each row's batch size)"
               if budget.max_train_examples > 0 else "")
            + (f"; rows about training longer: {', '.join(longer)}" if longer else "")
            + ". " + _time_line(summaries, n_done, n_runs), ""]
  lines += [_data_line(summaries), ""]
  header = ["row", "n"] + [h for _, _, h in COLUMNS] + [f"{label} {h}" for _, _, h in COLUMNS] + \
      [f"overall − {label}", "wall / run"]
  lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for s in summaries:
    report = s.row.report or {}
    ours = [_mean_sd(s, key) for _, key, _ in COLUMNS]
    theirs = [f"{report[c]:.3f}" if c in report else "—" for c, _, _ in COLUMNS]
    delta = (f"{s.mean['overall_mean'] - report['overall']:+.3f}"
             if report and s.mean["overall_mean"] is not None else "—")
    lines.append("| " + " | ".join([s.row.title, str(s.n), *ours, *theirs, delta, _minutes(s.wall_s_mean)]) + " |")
  lines += ["", "Ours: mean ± sample sd over the n finished seeds (no ± with one seed). SST dev has 1,101 "
            "examples, so one seed moves SST accuracy by about ±1.5 points: differences below that are noise.",
            ""]
  if conclusions:
    lines += [f"## Conclusions (from {CONCLUSIONS}, written by hand; the tables are rebuilt after every run)",
              "", conclusions.strip(), ""]
  lines += ["## Rows", ""]
  for s in summaries:
    overrides = ", ".join(f"`{k}={v!r}`" for k, v in s.row.overrides.items()) or "none"
    lines.append(f"- **{s.row.title}** (`{s.row.name}`): preset `{s.row.preset}`, overrides {overrides}, seeds "
                 f"{list(s.row.seeds)}." + (f" {s.row.note}" if s.row.note else ""))
  lines += ["", "## Runs", "",
            "| row | seed | overall | SST acc | Para acc | STS r | overall (CS224N) | best stage | wall | command |",
            "|---|---|---|---|---|---|---|---|---|---|"]
  for s in summaries:
    for e in s.runs:
      if e["scores"] is None:
        continue
      cells = [f"{e['scores'][k]:.4f}" for k in ("overall_mean", "sst_accuracy", "para_accuracy",
                                                  "sts_pearson", "overall_cs224n")]
      command = f"`{e['command']}`" + (f" (copied from `{e['reused_from']}`)" if e["reused_from"] else "")
      lines.append("| " + " | ".join([s.row.name, str(e["seed"]), *cells, str(e["best_stage"]),
                                      _minutes(e["wall_s"]), command]) + " |")
  unfinished = [(s.row.name, e) for s in summaries for e in s.runs if e["scores"] is None]
  if unfinished:
    lines += ["", "## Not finished", ""]
    lines += [f"- {name}/seed{e['seed']}: {e['state']}" + (f" ({e['detail']})" if e["detail"] else "")
              + f": `{e['command']}`" for name, e in unfinished]
  if study.notes:
    lines += ["", "## Notes", ""] + [f"- {note}" for note in study.notes]
  lines += [""] + _conflict_lines(conflict)
  lines += ["## Plots", "", "![dev scores per task, ours beside the report's](task_scores.png)", "",
            "![dev curves per run](dev_curves.png)", ""]
  return "\n".join(lines) + "\n"


# ---- plots -----------------------------------------------------------------------------------------

def read_metric_records(workdir: str) -> list[dict]:
  """metrics.jsonl records that carry a step; a line cut short by a kill mid-write is dropped."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isfile(path):
    return []
  records = []
  with open(path, encoding="utf-8") as f:
    for line in f:
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue  # only a killed write leaves one, and it carries nothing a later line doesn't redo
      if isinstance(record, dict) and "step" in record:
        records.append(record)
  return records


def dev_curve(records: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
  """(steps, values) of dev/<key> across stages and resumes.

  A resumed run logs again from its checkpoint, so a step seen twice keeps its last
  value. A later stage (the frozen stage) counts steps from 0 again: its evals go
  on after the previous stage's last step.
  """
  segments, current, last_step = [], {}, None
  for record in records:
    if record.get("kind") != "eval" or f"dev/{key}" not in record:
      continue
    step = record["step"]
    if last_step is not None and step < last_step:
      segments.append(current)
      current = {}
    current[step] = record[f"dev/{key}"]
    last_step = step
  segments.append(current)
  xs, ys, offset = [], [], 0
  for segment in segments:
    for step in sorted(segment):
      xs.append(offset + step)
      ys.append(segment[step])
    offset = xs[-1] if xs else offset
  return xs, ys


def gradient_cosines(records: Sequence[dict]) -> dict[str, tuple[list[float], list[float]]]:
  """{name: (steps, values)} of every train-record scalar whose name has "cosine" in it (last value per step)."""
  series = collections.defaultdict(dict)
  for record in records:
    if record.get("kind") != "train":
      continue
    for name, value in record.items():
      if "cosine" in name and isinstance(value, (int, float)):
        series[name][record["step"]] = value
  return {name: (sorted(values), [values[s] for s in sorted(values)]) for name, values in sorted(series.items())}


def gradient_conflict(summaries: Sequence[RowSummary]) -> list[dict[str, Any]]:
  """Per row and logged cosine: its values over training, pooled over the row's finished seeds.

  A logged value is one logging window's mean cosine (PCGrad's and the other
  methods' diagnostics, or `gradient_stats_every_steps`). The share below 0 is
  the share of windows in which the pair conflicted on average: single steps
  conflict more often than their window means do.
  """
  table = []
  for s in summaries:
    pooled = collections.defaultdict(list)
    for e in s.runs:
      if e["scores"] is None:
        continue
      for name, (_, values) in gradient_cosines(read_metric_records(e["workdir"])).items():
        pooled[name].extend(values)
    for name, values in pooled.items():
      v = np.asarray(values, np.float64)
      v = v[np.isfinite(v)]
      if v.size:
        table.append({"row": s.row.name, "cosine": name, "mean": float(v.mean()), "min": float(v.min()),
                      "max": float(v.max()), "share_below_0": float(np.mean(v < 0)), "values": int(v.size)})
  return table


def _conflict_lines(table: Sequence[dict[str, Any]]) -> list[str]:
  if not table:
    return []
  lines = ["## Gradient conflict", "",
           "Cosines between task gradients, as the runs logged them: each value is one logging window's "
           "mean, pooled over the row's finished seeds. Below 0 the two tasks pull the shared weights "
           "apart.", "",
           "| row | cosine | mean | min | max | share of windows < 0 | windows |", "|---|---|---|---|---|---|---|"]
  lines += [f"| {t['row']} | `{t['cosine']}` | {t['mean']:+.4f} | {t['min']:+.4f} | {t['max']:+.4f} | "
            f"{t['share_below_0']:.2f} | {t['values']} |" for t in table]
  return lines + [""]


def plot_task_scores(summaries: Sequence[RowSummary], label: str, path: str) -> str:
  fig, axes = plt.subplots(1, len(COLUMNS), figsize=(4.2 * len(COLUMNS), 4.8), sharey=False)
  x = np.arange(len(summaries))
  names = [s.row.name for s in summaries]
  for ax, (report_key, key, title) in zip(axes, COLUMNS):
    ours = [s.mean[key] if s.mean[key] is not None else np.nan for s in summaries]
    errors = [s.sd[key] or 0.0 for s in summaries]
    theirs = [(s.row.report or {}).get(report_key, np.nan) for s in summaries]
    ax.bar(x - 0.2, ours, 0.4, yerr=errors, capsize=3, label="ours (mean ± sd)", color="tab:blue")
    for i, s in enumerate(summaries):  # each seed as a dot
      seeds = [e["scores"][key] for e in s.runs if e["scores"] is not None]
      ax.plot([i - 0.2] * len(seeds), seeds, "k.", markersize=4)
    if np.isfinite(theirs).any():  # a study without report numbers gets no empty legend entry for them
      ax.bar(x + 0.2, theirs, 0.4, label=label, color="tab:orange", alpha=0.8)
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=8)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_dev_curves(summaries: Sequence[RowSummary], path: str) -> str:
  fig, axes = plt.subplots(1, len(DEV_CURVES), figsize=(4.2 * len(DEV_CURVES), 4.2))
  colors = plt.get_cmap("tab10")
  for i, s in enumerate(summaries):
    for e in s.runs:
      records = read_metric_records(e["workdir"])
      for j, (ax, (key, _)) in enumerate(zip(axes, DEV_CURVES)):
        xs, ys = dev_curve(records, key)
        if xs:
          ax.plot(xs, ys, marker="o", markersize=3, color=colors(i % 10), alpha=0.8,
                  label=s.row.name if e is s.runs[0] and j == 0 else None)
  for ax, (_, title) in zip(axes, DEV_CURVES):
    ax.set(title=f"dev {title}", xlabel="step")
    ax.grid(alpha=0.3)
  if axes[0].get_legend_handles_labels()[0]:  # no run has a dev eval yet: no legend to draw
    axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


def plot_gradient_cosines(summaries: Sequence[RowSummary], path: str) -> str | None:
  """One panel per run that logged gradient cosines; None (no file) when none did."""
  panels = []
  for s in summaries:
    for e in s.runs:
      series = gradient_cosines(read_metric_records(e["workdir"]))
      if series:
        panels.append((f"{s.row.name}/seed{e['seed']}", series))
  if not panels:
    if os.path.exists(path):
      os.remove(path)  # a stale plot from runs that are gone would mislead
    return None
  cols = min(3, len(panels))
  rows = math.ceil(len(panels) / cols)
  fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
  for ax, (title, series) in zip(axes.flat, panels):
    prefix = os.path.commonprefix(list(series)) if len(series) > 1 else ""
    prefix = prefix[:prefix.rfind("/") + 1]
    for name, (xs, ys) in series.items():
      ax.plot(xs, ys, label=name[len(prefix):], lw=1)
    ax.axhline(0.0, color="gray", lw=0.8)
    ax.set(title=f"{title}: {prefix or 'cosine'}", xlabel="step")
    ax.legend(fontsize=7)
  for ax in list(axes.flat)[len(panels):]:
    ax.axis("off")
  fig.suptitle("cosine between task gradients (< 0: they conflict)")
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
  return path


# ---- the report ------------------------------------------------------------------------------------

def _csv_rows(summaries: Sequence[RowSummary]) -> list[dict[str, Any]]:
  rows = []
  for s in summaries:
    report = s.row.report or {}
    for e in s.runs:
      scores = e["scores"] or {}
      rows.append({"row": s.row.name, "title": s.row.title, "preset": s.row.preset, "seed": e["seed"],
                   "state": e["state"], **{k: scores.get(k, "") for k in SCORE_KEYS},
                   "best_stage": e["best_stage"] or "", "wall_s": "" if e["wall_s"] is None else e["wall_s"],
                   **{f"report_{c}": report.get(c, "") for c, _, _ in COLUMNS},
                   "workdir": e["workdir"], "command": e["command"], "reused_from": e["reused_from"] or ""})
  return rows


def write_report(study: Study, runs: Sequence[RunRecord], report_dir: str, invocation: str) -> str:
  """Writes RESULTS.md, results.csv, results.json and the PNGs into `report_dir`; returns RESULTS.md's path."""
  os.makedirs(report_dir, exist_ok=True)
  summaries = summarize(study, runs)
  plot_task_scores(summaries, study.report_label, os.path.join(report_dir, "task_scores.png"))
  plot_dev_curves(summaries, os.path.join(report_dir, "dev_curves.png"))
  cosines = plot_gradient_cosines(summaries, os.path.join(report_dir, "gradient_cosines.png"))

  conclusions_path = os.path.join(report_dir, CONCLUSIONS)
  conclusions = None
  if os.path.isfile(conclusions_path):
    with open(conclusions_path, encoding="utf-8") as f:
      conclusions = f.read()
  conflict = gradient_conflict(summaries)
  markdown = results_markdown(study, summaries, invocation, conclusions, conflict)
  if cosines:
    markdown += "![gradient cosines per run](gradient_cosines.png)\n"
  path = os.path.join(report_dir, "RESULTS.md")
  with open(path, "w", encoding="utf-8") as f:
    f.write(markdown)
  rows = _csv_rows(summaries)
  with open(os.path.join(report_dir, "results.csv"), "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  document = {"study": study.name, "title": study.title, "source": study.source, "invocation": invocation,
              "budget": dataclasses.asdict(study.budget),
              "rows": [{"name": s.row.name, "title": s.row.title, "preset": s.row.preset,
                        "overrides": dict(s.row.overrides), "seeds": list(s.row.seeds),
                        "epochs_factor": s.row.epochs_factor, "note": s.row.note,
                        "report": dict(s.row.report) if s.row.report else None, "n": s.n, "mean": s.mean,
                        "sd": s.sd, "wall_s_mean": s.wall_s_mean, "runs": s.runs} for s in summaries],
              "gradient_conflict": conflict}
  with open(os.path.join(report_dir, "results.json"), "w", encoding="utf-8") as f:
    json.dump(document, f, indent=2, default=str)
  return path
