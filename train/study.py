"""`python -m train.study --study=<name> --workdir=<dir>`: run a study's presets x seeds, collect the tables.

Each (row, seed) of `train/studies/<name>.py` is its own `python -m train.main`
subprocess with its own workdir `<dir>/runs/<row>/seed<k>`, so one crash or
out-of-memory ends one run, not the study, and a killed study leaves at most one
half-finished run, which train.main resumes from its latest checkpoint.

  python -m train.study --study=tian_wang --workdir=/work/runs/study_tian_wang --report_dir=results/tian_wang
  python -m train.study --study=tian_wang --workdir=... --dry_run          # the runs and their commands
  python -m train.study --study=tian_wang --workdir=... --only='^pcgrad' --max_runs=2
  python -m train.study --study=tian_wang --workdir=... --collect_only     # rebuild the report from what's done
  python -m train.study --study=tian_wang --workdir=... --set=dtype=bfloat16  # an override for every run
  python -m train.study --study=wang --workdir=... --reuse_from=results/tian_wang  # copy runs it already has

Rerun the same command to go on: a run whose results.json exists and was computed
under the config the study asks for now is skipped; one with a different config is
reported as stale (with the fields that differ) and left alone unless
`--rerun_stale`, which moves the old workdir aside. After every run the report is
rebuilt (`train/study_report.py`), so a long study always has an up-to-date
RESULTS.md.

Every finished run's small files (results.json, study_run.json and metrics.jsonl;
no checkpoints, no prediction files) are also kept beside the report, in
`<report_dir>/runs/<row>/seed<k>/`. Commit the report directory and a study goes
on from any machine: a run whose workdir is gone but whose archived results.json
matches the config counts as finished, and the report reads it from there.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import fcntl
import glob
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from typing import Any, Mapping, Sequence

from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from train import config_changes, study_report
from train.config_changes import flatten as flatten_config
from train.study_spec import Row, Study, StudyError, load_study, preset_path

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN_RECORD = "study_run.json"  # in each run's workdir: the command and every attempt's wall time
TRAIN_LOG = "train.log"  # in each run's workdir: the subprocess's stdout and stderr
ARCHIVE = "runs"  # <report_dir>/runs/<row>/seed<k>: each finished run's small files
# What a finished run keeps beside the report: enough to rebuild every table and plot. The
# checkpoints, the model bundle and the prediction CSVs (no CSV goes into the repository) stay
# in the workdir.
# results.json, the mark of a finished run, is copied last.
ARCHIVED_FILES = (RUN_RECORD, "metrics.jsonl", "results.json")

_STUDY = flags.DEFINE_string("study", None, "A study in train/studies/ (e.g. tian_wang) or a path to a study file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the runs go: <workdir>/runs/<row>/seed<k>.")
_REPORT_DIR = flags.DEFINE_string("report_dir", None, "Where RESULTS.md, results.csv/json and the plots go "
                                  "(default: --workdir). No checkpoints are written there.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "List the runs, their state and exact commands; run nothing.")
_ONLY = flags.DEFINE_string("only", None, "Run only rows whose name matches this regex (re.search).")
_MAX_RUNS = flags.DEFINE_integer("max_runs", 0, "Stop after starting this many runs (0: no limit).")
_COLLECT_ONLY = flags.DEFINE_bool("collect_only", False, "Rebuild the report from the finished runs; run nothing.")
_SET = flags.DEFINE_multi_string("set", [], "key=value config override for every run of the study, e.g. "
                                  "--set=dtype=bfloat16 on a GPU; give it on every invocation (a run "
                                  "finished without it is otherwise stale).")
_REUSE_FROM = flags.DEFINE_multi_string(
    "reuse_from", [], "Another study's report directory (or workdir), e.g. results/tian_wang: a run not "
    "started yet whose config matches one of that study's finished runs is copied from it instead of "
    "trained again. Repeatable.")
_RERUN_STALE = flags.DEFINE_bool("rerun_stale", False, "Move aside runs finished under a different config "
                                 "(to <run>.stale<k>) and run them again.")


# ---- the runs a study asks for -------------------------------------------------------------------

def format_override(value: Any) -> str:
  """A config value as `--config.key=<this>` spells it for ml_collections' flag parsers."""
  if isinstance(value, bool):
    return str(value)
  if isinstance(value, (tuple, list)):
    return repr(tuple(value))
  if isinstance(value, (int, float, str)):
    return value if isinstance(value, str) else repr(value)
  raise StudyError(f"override value {value!r} of type {type(value).__name__}: expected bool, int, float, "
                   f"str or tuple")


def parse_set_flags(items: Sequence[str]) -> dict[str, Any]:
  """{"dtype": "bfloat16", "optim.learning_rate": 3e-05} from ["dtype=bfloat16", "optim.learning_rate=3e-5"]."""
  overrides = {}
  for item in items:
    key, sep, text = item.partition("=")
    if not sep or not key:
      raise StudyError(f"--set={item!r}: expected key=value, e.g. --set=dtype=bfloat16")
    try:
      overrides[key] = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      overrides[key] = text  # a bare string such as bfloat16
  return overrides


def _relative_to_repo(path: str) -> str:
  path = os.path.abspath(path)
  return os.path.relpath(path, REPO_ROOT) if path.startswith(REPO_ROOT + os.sep) else path


def train_argv(preset: str, overrides: Mapping[str, Any], workdir: str) -> list[str]:
  """train.main's arguments for a preset, overrides and workdir (run with cwd = the repository)."""
  argv = ["-m", "train.main", f"--config={_relative_to_repo(preset_path(preset))}"]
  argv += [f"--config.{key}={format_override(value)}" for key, value in overrides.items()]
  return argv + [f"--workdir={os.path.abspath(workdir)}"]


def parse_train_argv(argv: Sequence[str]):
  """The config and workdir train.main would build from `argv` (as `train_argv` returns it).

  The same config_flags definition train.main makes (a config file, lock_config=True),
  on a private FlagValues, so what the study compares against a run's results.json is
  the config that run was started with, and a misspelt override fails here, before
  any run starts, naming the row.
  """
  argv = list(argv)
  if argv[:2] != ["-m", "train.main"]:
    raise StudyError(f"not a train.main command line: {shlex.join(argv)}")
  args = [a if not a.startswith("--config=") or os.path.isabs(a[9:]) else f"--config={os.path.join(REPO_ROOT, a[9:])}"
          for a in argv[2:]]
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                           sys_argv=["train.main", *args])
  workdir = flags.DEFINE_string("workdir", None, "", flag_values=values)
  values(["train.main", *args])
  return holder.value, workdir.value


@dataclasses.dataclass
class RunSpec:
  """One (row, seed): where it runs, the exact command, and the config that command builds."""
  row: Row
  seed: int
  workdir: str
  argv: list[str]
  config: Any
  archive: str | None = None  # <report_dir>/runs/<row>/seed<k>, or None when the report is the workdir

  @property
  def label(self) -> str:
    return f"{self.row.name}/seed{self.seed}"

  @property
  def results_dir(self) -> str:
    """Where the run's results are read: its workdir, or its archive when only the archive has them."""
    if (self.archive and not os.path.isfile(os.path.join(self.workdir, "results.json"))
        and os.path.isfile(os.path.join(self.archive, "results.json"))):
      return self.archive
    return self.workdir

  def command(self, python: str | None = None) -> str:
    """The exact command line, to paste in the repository root."""
    return shlex.join([python or _relative_to_repo(sys.executable), *self.argv])


def run_overrides(study: Study, row: Row, seed: int, batch_size: int | None = None) -> dict[str, Any]:
  """Common, then the row's, then the budget and the seed: the study's overrides for one run."""
  overrides = {**study.common_overrides, **row.overrides}
  overrides["num_epochs"] = max(1, round(study.budget.num_epochs * row.epochs_factor))
  if study.budget.max_train_examples > 0 and batch_size:
    overrides["max_steps"] = math.ceil(study.budget.max_train_examples * row.epochs_factor / batch_size)
  overrides["seed"] = seed
  return overrides


def breadth_first(specs: Sequence[RunSpec]) -> list[RunSpec]:
  """Every row's first seed, then every row's second, ...: a study stopped half-way still has a whole table.

  Within a round the rows keep the study's order (the sort is stable).
  """
  return sorted(specs, key=lambda s: s.row.seeds.index(s.seed))


def plan_runs(study: Study, workdir: str, report_dir: str | None = None) -> list[RunSpec]:
  """Every (row, seed) with its command, its config checked by train.main's own parser.

  With a `report_dir` other than `workdir`, each run also has its archive there.
  """
  specs = []
  for row in study.rows:
    for seed in row.seeds:
      run_dir = os.path.join(workdir, "runs", row.name, f"seed{seed}")
      archive = os.path.join(report_dir, ARCHIVE, row.name, f"seed{seed}") if report_dir else None
      if archive and os.path.abspath(archive) == os.path.abspath(run_dir):
        archive = None
      try:
        config, _ = parse_train_argv(train_argv(row.preset, run_overrides(study, row, seed), run_dir))
        if study.budget.max_train_examples > 0:  # steps from the examples, at this row's batch size
          config, _ = parse_train_argv(train_argv(
              row.preset, run_overrides(study, row, seed, config.batch_size), run_dir))
      except (flags.Error, StudyError, ValueError, TypeError, AttributeError, KeyError) as e:
        why = e.args[0] if isinstance(e, KeyError) and e.args else e  # KeyError's str() is its repr
        raise StudyError(f"study {study.name!r}, row {row.name!r} (preset {row.preset}, overrides "
                         f"{dict(row.overrides)}): the train.main command does not parse: {why}") from e
      argv = train_argv(row.preset, run_overrides(study, row, seed, config.batch_size), run_dir)
      specs.append(RunSpec(row, seed, run_dir, argv, config, archive))
  return specs


# ---- the state of a run --------------------------------------------------------------------------

def config_differences(expected: Any, saved: Mapping) -> list[tuple[str, Any, Any]]:
  """(key, saved, expected) for every config field both have and that differ.

  Both sides go through JSON as results.json stores them (tuples become lists).
  Fields only one side has are fields added to or removed from the code since the
  run, not a different experiment, so they do not count; nor do the fields that
  cannot change what a run computes (`config_changes.FREE_FIELDS`: logging,
  checkpointing, caches), which a resume accepts as well.
  """
  now = flatten_config(json.loads(json.dumps(expected.to_dict(), default=str)))
  before = flatten_config(saved)
  return [(k, before[k], now[k]) for k in sorted(set(now) & set(before))
          if before[k] != now[k] and k not in config_changes.FREE_FIELDS]


@dataclasses.dataclass
class RunState:
  status: str  # "done", "stale", "partial", "failed", "pending"
  detail: str = ""


def run_state(spec: RunSpec) -> RunState:
  results_path = os.path.join(spec.results_dir, "results.json")
  archived = spec.results_dir != spec.workdir
  if os.path.isfile(results_path):
    with open(results_path, encoding="utf-8") as f:
      saved = json.load(f).get("config", {})
    differences = config_differences(spec.config, saved)
    where = f" (archived in {spec.archive})" if archived else ""
    if differences:
      shown = "; ".join(f"{k}: ran {a!r}, now {b!r}" for k, a, b in differences[:5])
      more = f" (+{len(differences) - 5} more)" if len(differences) > 5 else ""
      return RunState("stale", f"results.json{where} was computed under another config: {shown}{more}")
    return RunState("done", f"archived in {spec.archive}" if archived else "")
  attempts = read_run_record(spec.workdir).get("attempts", [])
  if attempts and attempts[-1].get("returncode") not in (None, 0):
    return RunState("failed", f"exit status {attempts[-1]['returncode']}; last lines in "
                    f"{os.path.join(spec.workdir, TRAIN_LOG)}; it resumes when run again")
  if os.path.isdir(os.path.join(spec.workdir, "checkpoints")):
    return RunState("partial", "resumes from its latest checkpoint")
  return RunState("pending")


def read_run_record(workdir: str) -> dict:
  path = os.path.join(workdir, RUN_RECORD)
  if not os.path.isfile(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _write_run_record(workdir: str, record: dict) -> None:
  path = os.path.join(workdir, RUN_RECORD)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(record, f, indent=2)
  os.replace(path + ".tmp", path)


def _attempt_walls(workdir: str, record: dict) -> list[dict]:
  """The run record's attempts, a killed one's wall time filled in.

  A killed attempt ran until its log last changed, or, since every attempt appends
  to the same log, until the next attempt started, whichever came first.
  """
  attempts = [dict(a) for a in record.get("attempts", [])]
  log = os.path.join(workdir, TRAIN_LOG)
  log_changed = os.path.getmtime(log) if os.path.isfile(log) else None
  for attempt, following in zip(attempts, attempts[1:] + [None]):
    if attempt.get("wall_s") is None and log_changed is not None:
      end = log_changed if following is None else min(log_changed, following["started"])
      attempt["wall_s"] = max(0.0, end - attempt["started"])
  return attempts


def run_wall_seconds(workdir: str) -> float | None:
  """Wall time over every attempt of a run; a killed attempt counts until its log last changed."""
  attempts = _attempt_walls(workdir, read_run_record(workdir))
  return sum(a["wall_s"] or 0.0 for a in attempts) if attempts else None


def archive_run(spec: RunSpec) -> bool:
  """Copies a finished run's `ARCHIVED_FILES` to its archive; False when there is nothing to copy.

  The archived run record has every attempt's wall time filled in, since the
  training log, which a killed attempt's time is read from, stays behind.
  """
  results = os.path.join(spec.workdir, "results.json")
  if not spec.archive or not os.path.isfile(results):
    return False
  archived = os.path.join(spec.archive, "results.json")
  if os.path.isfile(archived):
    with open(results, "rb") as new, open(archived, "rb") as old:
      if new.read() != old.read():  # another run of this (row, seed): none of the old one's files may stay
        shutil.rmtree(spec.archive)
  os.makedirs(spec.archive, exist_ok=True)
  for name in ARCHIVED_FILES:
    source, target = os.path.join(spec.workdir, name), os.path.join(spec.archive, name)
    if not os.path.isfile(source):
      continue
    if name == RUN_RECORD:
      record = read_run_record(spec.workdir)
      _write_run_record(spec.archive, {**record, "attempts": _attempt_walls(spec.workdir, record)})
    else:
      _copy_whole(source, target)
  return True


def _copy_whole(source: str, target: str) -> None:
  """Whole or not at all: a reader (a resumed study, another machine) never sees half a file."""
  shutil.copyfile(source, target + ".tmp")
  os.replace(target + ".tmp", target)


def find_reusable(spec: RunSpec, sources: Sequence[str]) -> str | None:
  """A finished run in another study (`<source>/runs/<row>/seed<k>/`) computed under `spec`'s config.

  The test is the one a resume applies to a run's own results.json
  (`config_differences`), seed included, since the seed is a config field; a
  results.json without a config matches nothing. The first match, in the order
  given and then by path, wins.
  """
  for source in sources:
    pattern = os.path.join(glob.escape(os.path.abspath(source)), ARCHIVE, "*", f"seed{spec.seed}", "results.json")
    for path in sorted(glob.glob(pattern)):
      with open(path, encoding="utf-8") as f:
        saved = json.load(f).get("config")
      if saved and not config_differences(spec.config, saved):
        return os.path.dirname(path)
  return None


def reuse_run(spec: RunSpec, source: str) -> str:
  """Copies a matching finished run's `ARCHIVED_FILES` in as this run's; returns where they went.

  They go to the run's archive (its workdir when the report is the workdir). The
  run record keeps the command the copy ran under and says where it was copied from.
  """
  target = spec.archive or spec.workdir
  os.makedirs(target, exist_ok=True)
  record = {**read_run_record(source), "reused_from": _relative_to_repo(source)}
  _write_run_record(target, record)
  for name in ARCHIVED_FILES:
    if name != RUN_RECORD and os.path.isfile(os.path.join(source, name)):
      _copy_whole(os.path.join(source, name), os.path.join(target, name))  # results.json last
  return target


# ---- running --------------------------------------------------------------------------------------

def _die_with_parent() -> None:
  """In the child, before exec: get SIGKILL when the study runner dies, however it dies.

  Without it a killed runner leaves its training running, and the next runner would
  start a second process on the same workdir. Linux only (prctl); elsewhere the
  child outlives a killed runner.
  """
  parent = os.getppid()
  with contextlib.suppress(OSError, AttributeError):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
  if os.getppid() != parent:  # the runner died before prctl took effect
    os._exit(1)


def run_one(spec: RunSpec, python: str = sys.executable) -> int:
  """Runs one (row, seed) to its end as a train.main subprocess; returns its exit status."""
  os.makedirs(spec.workdir, exist_ok=True)
  record = read_run_record(spec.workdir)
  record.update({"row": spec.row.name, "seed": spec.seed, "argv": spec.argv})
  # A killed attempt's end is its log's last change, known exactly only until this attempt writes to it.
  record["attempts"] = _attempt_walls(spec.workdir, record)
  record["attempts"].append({"started": time.time(), "wall_s": None, "returncode": None})
  _write_run_record(spec.workdir, record)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p))
  start = time.monotonic()
  with open(os.path.join(spec.workdir, TRAIN_LOG), "ab") as log:
    log.write(f"\n$ {spec.command(python)}\n".encode())
    log.flush()
    process = subprocess.Popen([python, *spec.argv], cwd=REPO_ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    returncode = process.wait()
  record["attempts"][-1].update({"wall_s": time.monotonic() - start, "returncode": returncode})
  _write_run_record(spec.workdir, record)
  return returncode


def _log_tail(workdir: str, lines: int = 15) -> str:
  path = os.path.join(workdir, TRAIN_LOG)
  if not os.path.isfile(path):
    return ""
  with open(path, encoding="utf-8", errors="replace") as f:
    text = f.read().replace("\r", "\n")  # tqdm redraws with carriage returns
  return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def progress_line(specs: Sequence[RunSpec], states: Mapping[str, RunState], todo: Sequence[RunSpec]) -> str:
  """"3/21 runs done (1 failed); ETA 4h10m: 18 runs x 13m52s, the mean of the 3 finished"."""
  done = [s for s in specs if states[s.label].status == "done"]
  failed = sum(states[s.label].status == "failed" for s in specs)
  walls = [w for w in (run_wall_seconds(s.results_dir) for s in done) if w]
  line = f"{len(done)}/{len(specs)} runs done" + (f" ({failed} failed)" if failed else "")
  if todo and walls:
    mean = sum(walls) / len(walls)
    line += (f"; ETA {_duration(mean * len(todo))}: {len(todo)} to run x {_duration(mean)}, "
             f"the mean wall time of {len(walls)} finished")
  elif todo:
    line += f"; {len(todo)} to run (ETA after the first finishes)"
  return line


def _move_aside(workdir: str) -> str:
  k = 1
  while os.path.exists(f"{workdir}.stale{k}"):
    k += 1
  os.rename(workdir, f"{workdir}.stale{k}")
  return f"{workdir}.stale{k}"


@contextlib.contextmanager
def study_lock(workdir: str):
  """One runner per study workdir: a second one would train the same runs twice at once."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, ".study.lock")
  with open(path, "a+", encoding="utf-8") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      raise StudyError(f"another study runner holds {path} (pid {f.read().strip() or '?'}); "
                       f"wait for it or stop it") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    yield


def _collect(study: Study, study_file: str, specs: Sequence[RunSpec], workdir: str, report_dir: str) -> str:
  runs = []
  for s in specs:
    state = run_state(s)
    if state.status == "done":
      archive_run(s)
    runs.append(study_report.RunRecord(row=s.row, seed=s.seed, workdir=s.results_dir, command=s.command(),
                                       state=state.status, detail=state.detail,
                                       wall_s=run_wall_seconds(s.results_dir),
                                       reused_from=read_run_record(s.results_dir).get("reused_from")))
  invocation = shlex.join([_relative_to_repo(sys.executable), "-m", "train.study", f"--study={_relative_to_repo(study_file)}",
                           f"--workdir={os.path.abspath(workdir)}",
                           f"--report_dir={os.path.abspath(report_dir)}"])
  return study_report.write_report(study, runs, report_dir, invocation)


def run_study(study: Study, study_file: str, workdir: str, report_dir: str, *, only: str | None = None,
              max_runs: int = 0, dry_run: bool = False, collect_only: bool = False,
              rerun_stale: bool = False, reuse_from: Sequence[str] = ()) -> int:
  """Runs what is left of the study; returns 1 if a run failed or is stale, else 0.

  With `reuse_from`, a run not started yet that another study already ran under
  the same config is copied from there (`find_reusable`) rather than trained.
  """
  for source in reuse_from:
    if not os.path.isdir(os.path.join(source, ARCHIVE)):
      raise StudyError(f"--reuse_from={source}: no {ARCHIVE}/ folder there; expected another study's "
                       f"report directory (or workdir), such as results/tian_wang")
  specs = plan_runs(study, workdir, report_dir)
  selected = [s for s in specs if only is None or re.search(only, s.row.name)]
  if only is not None and not selected:
    raise StudyError(f"--only={only!r} matches no row of {study.name}: {[r.name for r in study.rows]}")
  states = {s.label: run_state(s) for s in specs}
  say = tqdm.write

  if dry_run:
    say(f"study {study.name}: {len(specs)} runs ({len(selected)} selected), budget {study.budget}")
    for s in breadth_first(selected):  # in the order they will run
      state = states[s.label]
      source = find_reusable(s, reuse_from) if reuse_from and state.status == "pending" else None
      say(f"  {s.label:<36} {state.status:<8} {state.detail}"
          + (f"would be copied from {_relative_to_repo(source)}" if source else ""))
      say(f"    {s.command()}")
    return 0
  if collect_only:
    path = _collect(study, study_file, specs, workdir, report_dir)
    say(f"{progress_line(specs, states, [])}; report: {path}")
    return 0

  with study_lock(workdir):
    todo = []
    for s in selected:
      source = find_reusable(s, reuse_from) if reuse_from and states[s.label].status == "pending" else None
      if source:
        say(f"reuse {s.label}: copied from {_relative_to_repo(source)} to {reuse_run(s, source)}")
        states[s.label] = run_state(s)
      state = states[s.label]
      if state.status == "done":
        where = f", {state.detail}" if state.detail else ""
        say(f"skip {s.label}: finished (results.json matches the config{where})")
      elif state.status == "stale" and not rerun_stale:
        say(f"stale {s.label}: {state.detail}; left alone (--rerun_stale moves it aside and runs it again)")
      else:
        if state.status == "stale" and os.path.exists(s.workdir):
          say(f"stale {s.label}: moved to {_move_aside(s.workdir)}")
        elif state.status == "stale":  # only its archive is stale; the new run's archive replaces it
          say(f"stale {s.label}: runs again; its archive will be replaced")
        todo.append(s)
    todo = breadth_first(todo)
    if max_runs > 0:
      todo = todo[:max_runs]
    say(f"study {study.name}: {progress_line(specs, states, todo)}")
    tqdm.monitor_interval = 0  # no monitor thread: the children are forked with a preexec_fn
    bar = tqdm(total=len(todo), desc=study.name, unit="run")
    failed = []
    try:
      for i, s in enumerate(todo):
        bar.set_postfix_str(s.label)
        say(f"[{i + 1}/{len(todo)}] {s.label} ({states[s.label].status}): {s.command()}")
        returncode = run_one(s)
        states[s.label] = run_state(s)
        if returncode != 0 or states[s.label].status != "done":
          failed.append(s.label)
          say(f"FAILED {s.label} (exit status {returncode}); its log ends:\n{_log_tail(s.workdir)}")
        else:
          say(f"done {s.label} in {_duration(run_wall_seconds(s.workdir) or 0)}")
        bar.update(1)
        say(f"study {study.name}: {progress_line(specs, states, todo[i + 1:])}")
        _collect(study, study_file, specs, workdir, report_dir)
    finally:
      bar.close()
    path = _collect(study, study_file, specs, workdir, report_dir)
    stale = [s.label for s in selected if states[s.label].status == "stale"]
    say(f"report: {path}" + (f"; failed: {failed}" if failed else "") + (f"; stale: {stale}" if stale else ""))
    return 1 if failed or stale else 0


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _STUDY.value or not _WORKDIR.value:
    raise app.UsageError("--study and --workdir are required")
  try:
    study, study_file = load_study(_STUDY.value)
    if _SET.value:
      study = dataclasses.replace(study, common_overrides={**study.common_overrides, **parse_set_flags(_SET.value)})
    return run_study(study, study_file, os.path.abspath(_WORKDIR.value),
                     os.path.abspath(_REPORT_DIR.value or _WORKDIR.value), only=_ONLY.value,
                     max_runs=_MAX_RUNS.value, dry_run=_DRY_RUN.value, collect_only=_COLLECT_ONLY.value,
                     rerun_stale=_RERUN_STALE.value, reuse_from=_REUSE_FROM.value)
  except StudyError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  app.run(main)
