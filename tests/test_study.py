"""The study runner on the tiny config: kill and resume, the collected tables, plots, dry runs, bad studies.

One 3-run study (row "a" with seeds 0 and 1, row "b" without Quora training) is
run as a subprocess, breadth first (a/seed0, b/seed0, then a/seed1), SIGKILLed
while its last run trains, and run again: the finished runs are skipped (their
results.json untouched), the killed one resumes, and
the report's numbers are checked against every run's results.json. The rows share
one preset, so every run after the first reads its executables from the compilation
cache. Curves across stages and resumes, and gradient cosines, are checked on
metrics files written by the test (PCGrad would compile a second optimizer step).
"""

import csv
import json
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import matplotlib.image
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from tests.test_train import REPO_ROOT, _write_config_file, tiny_config
from train import study as study_lib
from train.study_spec import StudyError, load_study

REPORT_A = {"overall": 0.5, "sst": 0.25, "para": 0.75, "sts": 0.5}


def _tiny_study_config(world, root):
  """The tiny config, one epoch, one padded shape per task: fewer executables to compile."""
  return tiny_config(world, root, num_epochs=1, **{"data.packing": False, "data.num_buckets": 1})


def _write_study(path: pathlib.Path, preset: pathlib.Path, learning_rate: float | None = None,
                 b_overrides: dict | None = None) -> pathlib.Path:
  extra = "" if learning_rate is None else f', {{"optim.learning_rate": {learning_rate!r}}}'
  b_overrides = {"data.para_fraction": 0.0, **(b_overrides or {})}
  path.write_text(f'''
from train.study_spec import Budget, Row, Study

def get_study():
  return Study(name="tiny", title="Tiny study", budget=Budget(num_epochs=1), report_label="paper", rows=(
      Row("a", "Row A", {str(preset)!r}{extra}, seeds=(0, 1), report={REPORT_A!r}),
      Row("b_no_para", "Row B", {str(preset)!r}, {b_overrides!r}),
  ))
''')
  return path


def _study_command(study_file, workdir, report_dir, *extra):
  return [sys.executable, "-m", "train.study", f"--study={study_file}", f"--workdir={workdir}",
          f"--report_dir={report_dir}", *extra]


def _env():
  """The runner's environment: one CPU device, not conftest's 8 simulated ones (~30 executables, not ~100)."""
  env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
  env.pop("XLA_FLAGS", None)
  return env


def _training_processes(workdir: pathlib.Path) -> list[int]:
  """Pids of live train.main processes whose --workdir is `workdir`."""
  pids = []
  for proc in pathlib.Path("/proc").iterdir():
    if not proc.name.isdigit():
      continue
    try:
      cmdline = (proc / "cmdline").read_bytes().split(b"\0")
      state = (proc / "stat").read_text().split(") ")[-1][:1]
    except OSError:
      continue
    if f"--workdir={workdir}".encode() in cmdline and state != "Z":
      pids.append(int(proc.name))
  return pids


@pytest.fixture(scope="module")
def finished_study(tiny_world, tmp_path_factory):
  """Runs the study, kills it during its last run (a/seed1), reruns it; returns what each step left."""
  root = tmp_path_factory.mktemp("study")
  preset = _write_config_file(root / "tiny_preset.py", _tiny_study_config(tiny_world, root))
  study_file = _write_study(root / "tiny_study.py", preset)
  workdir, report_dir = root / "work", root / "report"
  first_done = workdir / "runs" / "a" / "seed0" / "results.json"
  round_one_done = (first_done, workdir / "runs" / "b_no_para" / "seed0" / "results.json")
  last_run = workdir / "runs" / "a" / "seed1"

  process = subprocess.Popen(_study_command(study_file, workdir, report_dir), cwd=REPO_ROOT, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  deadline = time.time() + 300
  while time.time() < deadline and process.poll() is None:
    steps_saved = last_run / "checkpoints" / "main"
    # The last run has a finished checkpoint (Orbax renames "2.orbax-checkpoint-tmp-..." to "2").
    if all(p.exists() for p in round_one_done) and steps_saved.is_dir() and any(p.name.isdigit() for p in steps_saved.iterdir()):
      process.send_signal(signal.SIGKILL)
      break
    time.sleep(0.02)
  first_output = process.communicate()[0].decode()
  assert process.returncode == -signal.SIGKILL, f"the study ended before it was killed:\n{first_output[-3000:]}"
  orphans = _training_processes(last_run)
  for _ in range(100):  # the child gets SIGKILL from the kernel when the runner dies
    if not orphans:
      break
    time.sleep(0.05)
    orphans = _training_processes(last_run)
  killed = {"orphans": orphans, "last_had_results": (last_run / "results.json").exists(),
            "first_mtime": first_done.stat().st_mtime_ns}

  resumed = subprocess.run(_study_command(study_file, workdir, report_dir), cwd=REPO_ROOT, env=_env(),
                           capture_output=True, text=True, timeout=300)
  assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
  return {"root": root, "preset": preset, "study_file": study_file, "workdir": workdir, "report_dir": report_dir,
          "killed": killed, "first_output": first_output, "output": resumed.stdout + resumed.stderr}


def _run_dirs(finished_study):
  runs = finished_study["workdir"] / "runs"
  return {"a/seed0": runs / "a" / "seed0", "a/seed1": runs / "a" / "seed1", "b_no_para/seed0": runs / "b_no_para" / "seed0"}


def test_killed_study_resumes_and_skips_finished_runs(finished_study):
  killed, output = finished_study["killed"], finished_study["output"]
  assert not killed["orphans"], f"training processes outlived the killed runner: {killed['orphans']}"
  assert not killed["last_had_results"], "the last run finished before the kill; nothing was resumed"
  first_output = finished_study["first_output"]
  order = [first_output.index(f"[{i}/3] {run} (pending)") for i, run in
           enumerate(("a/seed0", "b_no_para/seed0", "a/seed1"), start=1)]
  assert order == sorted(order), first_output[-3000:]  # every row's first seed before any second seed
  assert "skip a/seed0: finished" in output and "skip b_no_para/seed0: finished" in output
  assert "[1/1] a/seed1 (partial)" in output  # the killed run, resumed from its checkpoint
  assert re.search(r"ETA \d+m\d\ds: 1 to run", output), output  # from the runs finished before the kill
  assert (finished_study["workdir"] / "runs" / "a" / "seed0" / "results.json").stat().st_mtime_ns == \
      killed["first_mtime"]
  log = (finished_study["workdir"] / "runs" / "a" / "seed1" / "train.log").read_text()
  assert "main: resumed from step" in log
  for run, path in _run_dirs(finished_study).items():
    assert (path / "results.json").is_file(), run
    attempts = json.loads((path / "study_run.json").read_text())["attempts"]
    assert len(attempts) == (2 if run == "a/seed1" else 1), (run, attempts)
    assert all(a["wall_s"] is not None for a in attempts), (run, attempts)  # the killed one: filled at resume


def test_no_paraphrase_training_with_fraction_zero(finished_study):
  records = [json.loads(line) for line in
             (_run_dirs(finished_study)["b_no_para/seed0"] / "metrics.jsonl").read_text().splitlines()]
  train_records = [r for r in records if r["kind"] == "train"]
  assert train_records and not any("loss/para" in r for r in train_records)
  assert all("loss/sst" in r and "loss/sts" in r for r in train_records)


def _markdown_table(text: str, first_header: str) -> list[list[str]]:
  lines = text.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
  rows = []
  for line in lines[start + 2:]:
    if not line.startswith("|"):
      break
    rows.append([cell.strip() for cell in line.strip().strip("|").split(" | ")])
  return rows


def test_collected_tables_match_each_runs_results(finished_study):
  report_dir = finished_study["report_dir"]
  scores = {run: json.loads((path / "results.json").read_text())["scores"]
            for run, path in _run_dirs(finished_study).items()}
  keys = ["overall_mean", "sst_accuracy", "para_accuracy", "sts_pearson", "overall_cs224n"]

  with open(report_dir / "results.csv", newline="") as f:
    csv_rows = {f"{r['row']}/seed{r['seed']}": r for r in csv.DictReader(f)}
  assert csv_rows.keys() == scores.keys()
  for run, expected in scores.items():
    for key in keys:
      assert float(csv_rows[run][key]) == expected[key], (run, key)  # repr round-trips a float exactly
    assert csv_rows[run]["state"] == "done" and float(csv_rows[run]["wall_s"]) > 0

  markdown = (report_dir / "RESULTS.md").read_text()
  per_run = {f"{cells[0]}/seed{cells[1]}": cells for cells in _markdown_table(markdown, "row | seed")}
  assert per_run.keys() == scores.keys()
  for run, cells in per_run.items():
    assert cells[2:7] == [f"{scores[run][k]:.4f}" for k in keys], run
    argv = json.loads((_run_dirs(finished_study)[run] / "study_run.json").read_text())["argv"]
    assert cells[-1].strip("`").split(" ", 1)[1] == shlex.join(argv), run

  main = {cells[0]: cells for cells in _markdown_table(markdown, "row | n")}
  row_a = [scores["a/seed0"], scores["a/seed1"]]
  for column, key in enumerate(["overall_mean", "sst_accuracy", "para_accuracy", "sts_pearson"]):
    values = np.array([s[key] for s in row_a])
    assert main["Row A"][2 + column] == f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"
    assert main["Row B"][2 + column] == f"{scores['b_no_para/seed0'][key]:.3f}"  # one seed: no ±
  assert main["Row A"][1] == "2" and main["Row B"][1] == "1"
  assert main["Row A"][6:10] == [f"{REPORT_A[c]:.3f}" for c in ("overall", "sst", "para", "sts")]
  assert main["Row B"][6:10] == ["—"] * 4
  assert main["Row A"][10] == f"{np.mean([s['overall_mean'] for s in row_a]) - REPORT_A['overall']:+.3f}"
  assert "`num_epochs=1`" in markdown

  document = json.loads((report_dir / "results.json").read_text())
  row = next(r for r in document["rows"] if r["name"] == "a")
  assert row["n"] == 2 and row["mean"]["overall_mean"] == np.mean([s["overall_mean"] for s in row_a])
  assert [r["scores"] for r in row["runs"]] == row_a


def test_a_fresh_machine_goes_on_from_the_report_directory_alone(finished_study, tmp_path):
  """Only the report directory survives, as a committed one does: no run trains again, the tables are the same."""
  report = tmp_path / "report"
  shutil.copytree(finished_study["report_dir"], report)
  for run in _run_dirs(finished_study):
    archived = report / "runs" / run
    files = sorted(p.relative_to(archived).as_posix() for p in archived.rglob("*") if p.is_file())
    assert files == ["metrics.jsonl", "results.json", "study_run.json"], (run, files)
    assert (archived / "results.json").read_bytes() == (_run_dirs(finished_study)[run] / "results.json").read_bytes()
  fresh = tmp_path / "fresh_work"
  result = subprocess.run(_study_command(finished_study["study_file"], fresh, report), cwd=REPO_ROOT, env=_env(),
                          capture_output=True, text=True, timeout=120)
  output = result.stdout + result.stderr
  assert result.returncode == 0, output[-3000:]
  for run in _run_dirs(finished_study):
    assert f"skip {run}: finished (results.json matches the config, archived in {report / 'runs' / run})" in output
  assert "[1/" not in output and not (fresh / "runs").exists(), output[-3000:]  # nothing ran

  def table(directory):
    with open(directory / "results.csv", newline="") as f:
      return {f"{r['row']}/seed{r['seed']}": {k: v for k, v in r.items() if k not in ("workdir", "command")}
              for r in csv.DictReader(f)}
  assert table(report) == table(finished_study["report_dir"])  # the killed run's wall time included
  markdown = (report / "RESULTS.md").read_text()
  original = (finished_study["report_dir"] / "RESULTS.md").read_text()
  assert _markdown_table(markdown, "row | n") == _markdown_table(original, "row | n")
  assert _coloured_share(report / "dev_curves.png") > 0.0002  # read from the archived metrics.jsonl

  changed = _write_study(tmp_path / "tiny_study_lr.py", finished_study["preset"], learning_rate=5e-4)
  study, _ = load_study(str(changed))
  states = {s.label: study_lib.run_state(s) for s in study_lib.plan_runs(study, str(fresh), str(report))}
  assert states["a/seed0"].status == "stale" and "archived in" in states["a/seed0"].detail
  assert states["b_no_para/seed0"].status == "done"


def test_reuse_from_copies_another_studys_matching_runs_and_trains_nothing(finished_study, tmp_path, capsys):
  other_file = tmp_path / "other_study.py"
  other_file.write_text(f'''
from train.study_spec import Budget, Row, Study

def get_study():
  return Study(name="other", title="Other", budget=Budget(num_epochs=1), rows=(
      Row("same_as_a", "Row A again", {str(finished_study["preset"])!r}, seeds=(0, 1)),
      Row("a_lr", "Row A, another learning rate", {str(finished_study["preset"])!r},
          {{"optim.learning_rate": 5e-4}}),
  ))
''')
  study, _ = load_study(str(other_file))
  source = finished_study["report_dir"]
  workdir, report = tmp_path / "work", tmp_path / "report"
  with pytest.raises(StudyError, match=r"--reuse_from=.*nowhere: no runs/ folder"):
    study_lib.run_study(study, str(other_file), str(workdir), str(report), reuse_from=[str(tmp_path / "nowhere")])

  study_lib.run_study(study, str(other_file), str(workdir), str(report), dry_run=True, reuse_from=[str(source)])
  listed = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()
            if line.startswith("  ") and not line.startswith("    ")}
  assert listed["same_as_a/seed1"].endswith(f"would be copied from {source / 'runs' / 'a' / 'seed1'}")
  assert "copied" not in listed["a_lr/seed0"]
  specs = {s.label: s for s in study_lib.plan_runs(study, str(workdir), str(report))}
  assert study_lib.find_reusable(specs["same_as_a/seed1"], [str(source)]) == str(source / "runs" / "a" / "seed1")
  assert study_lib.find_reusable(specs["a_lr/seed0"], [str(source)]) is None  # another learning rate
  assert not report.exists()  # the dry run copied nothing

  assert study_lib.run_study(study, str(other_file), str(workdir), str(report), only="^same_as_a$",
                             reuse_from=[str(source)]) == 0
  assert not (workdir / "runs").exists()  # nothing trained
  for seed in (0, 1):
    copied, original = report / "runs" / "same_as_a" / f"seed{seed}", source / "runs" / "a" / f"seed{seed}"
    assert (copied / "results.json").read_bytes() == (original / "results.json").read_bytes()
    record = json.loads((copied / "study_run.json").read_text())
    assert record["reused_from"] == str(original) and record["argv"] == json.loads(
        (original / "study_run.json").read_text())["argv"]  # the command the copy really ran under
    assert study_lib.run_state(specs[f"same_as_a/seed{seed}"]).status == "done"
  runs_table = {f"{c[0]}/seed{c[1]}": c for c in _markdown_table((report / "RESULTS.md").read_text(), "row | seed")}
  assert runs_table.keys() == {"same_as_a/seed0", "same_as_a/seed1"}
  assert runs_table["same_as_a/seed1"][-1].endswith(f"(copied from `{source / 'runs' / 'a' / 'seed1'}`)")
  with open(report / "results.csv", newline="") as f:
    reused = {r["row"] + r["seed"]: r["reused_from"] for r in csv.DictReader(f)}
  assert reused == {"same_as_a0": str(source / "runs" / "a" / "seed0"),
                    "same_as_a1": str(source / "runs" / "a" / "seed1"), "a_lr0": ""}


def _coloured_share(path: pathlib.Path) -> float:
  """Share of a PNG's pixels that carry colour (bars, curves, markers), not white, black or grey."""
  rgb = matplotlib.image.imread(path)[..., :3]
  return float(np.mean(rgb.max(axis=-1) - rgb.min(axis=-1) > 0.2))


def test_plots_are_written(finished_study):
  report_dir = finished_study["report_dir"]
  assert _coloured_share(report_dir / "task_scores.png") > 0.01  # bars
  assert _coloured_share(report_dir / "dev_curves.png") > 0.0002  # one eval per run: markers only
  assert (report_dir / "dev_curves.png").stat().st_size > 10_000
  assert not (report_dir / "gradient_cosines.png").exists()  # no run logged any
  assert "gradient_cosines.png" not in (report_dir / "RESULTS.md").read_text()


def _write_run(workdir: pathlib.Path, records, scores) -> None:
  workdir.mkdir(parents=True)
  (workdir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n{\"step\": 9, \"ki")
  (workdir / "results.json").write_text(json.dumps({"scores": scores, "best_stage": "main", "config": {}}))


def test_curves_across_resumes_and_stages_and_cosine_plots(tmp_path):
  from train import study_report
  from train.study_spec import Row, Study
  evals = [{"step": 4, "kind": "eval", "dev/overall_mean": 0.1}, {"step": 8, "kind": "eval", "dev/overall_mean": 0.2},
           {"step": 8, "kind": "eval", "dev/overall_mean": 0.25},  # logged again after a resume
           {"step": 3, "kind": "eval", "dev/overall_mean": 0.3}]  # the frozen stage counts from 0 again
  train_records = [{"step": s, "kind": "train", "pcgrad/cosine/sst-para": np.cos(s), "pcgrad/cosine/para-sts": -0.1 * s,
                    "conflict/mgda/cosine/sst-sts": 0.5, "loss/sst": 1.0} for s in range(1, 9)]
  assert study_report.dev_curve(evals, "overall_mean") == ([4, 8, 11], [0.1, 0.25, 0.3])
  assert set(study_report.gradient_cosines(train_records)) == {
      "pcgrad/cosine/sst-para", "pcgrad/cosine/para-sts", "conflict/mgda/cosine/sst-sts"}
  scores = {"overall_mean": 0.3, "sst_accuracy": 0.2, "para_accuracy": 0.6, "sts_pearson": 0.1,
            "overall_cs224n": 0.4}
  runs = []
  for name in ("x", "y"):
    _write_run(tmp_path / name, evals + train_records, scores)
    runs.append(study_report.RunRecord(Row(name, name, "default"), 0, str(tmp_path / name), "cmd", "done"))
  study = Study(name="s", title="t", rows=tuple(r.row for r in runs))
  path = study_report.write_report(study, runs, str(tmp_path / "report"), "python -m train.study")
  assert _coloured_share(tmp_path / "report" / "gradient_cosines.png") > 0.005
  assert _coloured_share(tmp_path / "report" / "dev_curves.png") > 0.001  # lines now, in one of four panels
  assert "![gradient cosines per run](gradient_cosines.png)" in pathlib.Path(path).read_text()


def test_conflict_table_pools_each_rows_seeds_and_conclusions_survive_rebuilds(tmp_path):
  from train import study_report
  from train.study_spec import Row, Study
  scores = {"overall_mean": 0.3, "sst_accuracy": 0.2, "para_accuracy": 0.6, "sts_pearson": 0.1,
            "overall_cs224n": 0.4}
  row = Row("pcgrad", "PCGrad", "default", seeds=(0, 1))
  cosines = {0: [0.2, -0.1, -0.3], 1: [0.4, float("nan"), -0.2]}  # NaN: a window with no measured step
  runs = []
  for seed, values in cosines.items():
    records = [{"step": 10 * (i + 1), "kind": "train", "pcgrad/cosine/sst-sts": v, "loss/sst": 1.0}
               for i, v in enumerate(values)]
    _write_run(tmp_path / f"seed{seed}", records, scores)
    runs.append(study_report.RunRecord(row, seed, str(tmp_path / f"seed{seed}"), "cmd", "done"))
  runs.append(study_report.RunRecord(row, 2, str(tmp_path / "seed2"), "cmd", "pending"))  # not pooled
  study = Study(name="s", title="t", rows=(row,))
  report_dir = tmp_path / "report"
  report_dir.mkdir()
  conclusions = "PCGrad's STS conflict is mild: its cosines stay near 0.\n"
  (report_dir / "CONCLUSIONS.md").write_text(conclusions)

  for _ in range(2):  # a rebuild keeps the hand-written file and shows it again
    text = pathlib.Path(study_report.write_report(study, runs, str(report_dir), "cmd")).read_text()
    assert (report_dir / "CONCLUSIONS.md").read_text() == conclusions
    assert text.count(conclusions.strip()) == 1
  pooled = np.asarray([0.2, -0.1, -0.3, 0.4, -0.2])
  [entry] = json.loads((report_dir / "results.json").read_text())["gradient_conflict"]
  assert entry == {"row": "pcgrad", "cosine": "pcgrad/cosine/sst-sts", "mean": pytest.approx(pooled.mean()),
                   "min": -0.3, "max": 0.4, "share_below_0": 0.6, "values": 5}
  [line] = [r for r in _markdown_table(text, "row | cosine") if r[0] == "pcgrad"]
  assert line[2:] == [f"{pooled.mean():+.4f}", "-0.3000", "+0.4000", "0.60", "5"]
  assert text.index("## Conclusions") < text.index("## Rows")


def _parse_as_train_main(command: str):
  """The config and workdir that `python -m train.main` would parse from a printed command line."""
  argv = shlex.split(command)
  assert argv[1:3] == ["-m", "train.main"], command
  args = [a if not a.startswith("--config=") or os.path.isabs(a[9:]) else f"--config={REPO_ROOT / a[9:]}"
          for a in argv[3:]]
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                           sys_argv=["train.main", *args])
  workdir = flags.DEFINE_string("workdir", None, "", flag_values=values)
  values(["train.main", *args])
  return holder.value, workdir.value


def test_dry_run_lists_commands_that_parse_as_train_main(tiny_world, tmp_path):
  preset = _write_config_file(tmp_path / "tiny_preset.py", _tiny_study_config(tiny_world, tmp_path))
  study_file = _write_study(tmp_path / "tiny_study.py", preset)
  workdir = tmp_path / "work"
  result = subprocess.run(_study_command(study_file, workdir, tmp_path / "report", "--dry_run"),
                          cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  commands = [line.strip() for line in (result.stdout + result.stderr).splitlines() if "-m train.main" in line]
  assert len(commands) == 3
  expected = [("a", 0), ("b_no_para", 0), ("a", 1)]  # in the order they will run: breadth first
  for command, (row, seed) in zip(commands, expected):
    config, run_dir = _parse_as_train_main(command)
    assert run_dir == str(workdir / "runs" / row / f"seed{seed}")
    assert config.seed == seed and config.num_epochs == 1
    assert config.checkpoint == tiny_world["checkpoint"]  # the preset's own fields come through
    assert config.data.para_fraction == (0.0 if row == "b_no_para" else 1.0)
  assert not workdir.exists(), "a dry run must not create anything"


def test_changed_config_marks_a_finished_run_stale(finished_study):
  # Row b changes only how the run is logged: not another experiment, so its finished run still counts.
  changed = _write_study(finished_study["root"] / "tiny_study_lr.py", finished_study["preset"], learning_rate=5e-4,
                         b_overrides={"log_every_steps": 7, "gradient_stats_every_steps": 5})
  study, _ = load_study(str(changed))
  states = {s.label: study_lib.run_state(s) for s in study_lib.plan_runs(study, str(finished_study["workdir"]))}
  assert states["a/seed0"].status == "stale"
  assert "optim.learning_rate: ran 0.001, now 0.0005" in states["a/seed0"].detail
  assert states["b_no_para/seed0"].status == "done"


def test_max_train_examples_budget_sets_steps_from_each_rows_batch_size(tmp_path):
  study_file = tmp_path / "budget_study.py"
  study_file.write_text('''
from train.study_spec import Budget, Row, Study

def get_study():
  return Study(name="budget", title="t", budget=Budget(num_epochs=3, max_train_examples=1000), rows=(
      Row("seq", "sequential, batch 32", "baseline_sequential"),
      Row("rr", "round-robin, batch 64", "default", epochs_factor=2.0),
  ))
''')
  study, _ = load_study(str(study_file))
  seq, rr = study_lib.plan_runs(study, str(tmp_path / "w"))
  assert (seq.config.batch_size, seq.config.max_steps, seq.config.num_epochs) == (32, 32, 3)  # ceil(1000/32)
  assert (rr.config.batch_size, rr.config.max_steps, rr.config.num_epochs) == (64, 32, 6)  # ceil(2000/64)


@pytest.mark.parametrize("row_source,message", [
    ('Row("x", "t", "default", {"optim.learning_rat": 1e-4})', r"row 'x' .*does not parse.*learning_rat"),
    ('Row("x", "t", "default", {"seed": 3})', r"row 'x': overrides set 'seed'"),
    ('Row("x", "t", "no_such_preset")', r"row 'x': preset 'no_such_preset' is not a file"),
    ('Row("x y", "t", "default")', r"row 'x y': name must be"),
    ('Row("x", "t", "default", report={"overall": 0.5})', r"row 'x': report=.*expected exactly the keys"),
])
def test_bad_study_is_refused_naming_row_and_field(tmp_path, row_source, message):
  study_file = tmp_path / "bad_study.py"
  study_file.write_text(f'''
from train.study_spec import Row, Study

def get_study():
  return Study(name="bad", title="t", rows=({row_source},))
''')
  with pytest.raises(StudyError, match=message):
    study, _ = load_study(str(study_file))
    study_lib.plan_runs(study, str(tmp_path / "w"))


def test_the_shipped_studies_plan(tmp_path):
  for name, runs in (("tian_wang", 19), ("wang", 15), ("open_questions", 11), ("conflict_methods", 39)):
    study, _ = load_study(name)
    specs = study_lib.plan_runs(study, str(tmp_path / name))
    assert len(specs) == runs
    assert all(s.config.num_epochs == round(study.budget.num_epochs * s.row.epochs_factor) for s in specs)
  tian_wang, _ = load_study("tian_wang")
  assert [r.report["overall"] for r in tian_wang.rows] == [0.511, 0.546, 0.615, 0.605, 0.582, 0.648, 0.638]
  best = sorted(tian_wang.rows[1:], key=lambda r: -r.report["overall"])[:3]
  assert all(len(r.seeds) >= 3 for r in [tian_wang.rows[0], *best])
  conflict_methods, _ = load_study("conflict_methods")
  from train.conflicts import registry
  assert [r.name for r in conflict_methods.rows] == ["sum", *registry.METHODS]
  assert all(r.seeds == (0, 1, 2) and r.preset == "default" for r in conflict_methods.rows)
  assert [dict(r.overrides).get("conflicts.method") for r in conflict_methods.rows[1:]] == list(registry.METHODS)


def test_the_committed_reports_runs_still_match_their_rows(tmp_path):
  # A preset change must not turn a committed report's runs stale, which would make the next
  # `train.study` train them again and drop them from the table: rows measured on the preset as it
  # was keep its old values as overrides (the quality study's `on_the_default`).
  for name in sorted(p.stem for p in (REPO_ROOT / "train" / "studies").glob("*.py") if p.stem != "__init__"):
    study, _ = load_study(name)
    report = REPO_ROOT / "results" / name
    states = {f"{s.row.name}/seed{s.seed}": study_lib.run_state(s)
              for s in study_lib.plan_runs(study, str(tmp_path / name), str(report))}
    assert {run: state.detail for run, state in states.items() if state.status == "stale"} == {}, name
    committed = {p.parent.relative_to(report / "runs").as_posix() for p in report.glob("runs/*/*/results.json")}
    assert committed == {run for run, state in states.items() if state.status == "done"}, name


def test_a_killed_attempts_wall_time_ends_when_the_next_attempt_starts(tmp_path):
  # Every attempt appends to one train.log, so its last change is when the last attempt ended.
  started = 1_000_000.0
  record = {"argv": [], "attempts": [{"started": started, "wall_s": None, "returncode": None},
                                     {"started": started + 30, "wall_s": 1000.0, "returncode": 0},
                                     {"started": started + 2000, "wall_s": None, "returncode": None}]}
  (tmp_path / study_lib.RUN_RECORD).write_text(json.dumps(record))
  log = tmp_path / study_lib.TRAIN_LOG
  log.write_text("log\n")
  os.utime(log, (started + 2500, started + 2500))
  assert [a["wall_s"] for a in study_lib._attempt_walls(str(tmp_path), record)] == [30.0, 1000.0, 500.0]
  assert study_lib.run_wall_seconds(str(tmp_path)) == 1530.0
