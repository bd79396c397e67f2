"""How the command line reports a failed run: a short message on stderr, exit status 1.

A run that fails inside TFDS, Orbax or XLA prints a couple of hundred lines of
traceback, in which the cause ("No space left on device", a bad config field,
a missing file) is one line somewhere. `exit_with_error` prints that cause
instead: the exception's message (and the operating-system error under it,
when a library wrapped one), and where the full traceback was written. With
--verbosity given, or BERT_JAX_TRACEBACK=1, the traceback goes to stderr too.

It ends the process with `os._exit(1)` once stdout, stderr and the log are
flushed. A normal exit after an exception runs interpreter shutdown while
Orbax's async checkpointing, TensorStore and the input thread may still be
running C++ code, which can abort ("terminate called after throwing ...",
status -6). Nothing is lost by skipping that shutdown: checkpoints are written
to a temporary directory and renamed only when complete.
"""

from __future__ import annotations

import errno
import logging as std_logging
import os
import sys
import tempfile
import traceback
from typing import NoReturn

TRACEBACK_ENV = "BERT_JAX_TRACEBACK"
MAX_MESSAGE_LINES = 14  # a ConfigError lists one field a line; longer messages are cut


def _chain(error: BaseException) -> list[BaseException]:
  """`error` and what caused it, outermost first (explicit causes, then implicit contexts)."""
  chain, seen = [], set()
  while error is not None and id(error) not in seen:
    chain.append(error)
    seen.add(id(error))
    error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
  return chain


def unknown_override(error: BaseException, argv: list[str], flag: str = "config") -> str | None:
  """What to say when `--config.x=y` names no field, else None.

  ml_collections applies the overrides while absl parses the flags and reports
  an unknown one as a bare `AttributeError: "'x'"`, so it is recognised here:
  a KeyError/AttributeError before the flags are parsed, whose key one of the
  `--config.*` arguments names.
  """
  from absl import flags
  if flags.FLAGS.is_parsed() or not isinstance(error, (AttributeError, KeyError)):
    return None
  key_errors = [e for e in _chain(error) if isinstance(e, KeyError) and e.args]
  text = str(key_errors[0].args[0]) if key_errors else str(error.args[0] if error.args else "")
  key, _, hint = text.partition("\n")
  key = key.strip("\"'")
  overrides = [arg for arg in argv[1:] if arg.lstrip("-").startswith(f"{flag}.")
               and key in arg.split("=", 1)[0].lstrip("-").split(".")[1:]]
  if not overrides:
    return None
  hint = f" {hint.strip()}" if hint.strip() else ""
  return (f"{overrides[-1]}: the config has no field {key!r}.{hint} "
          f"(--dry_run prints every field of the config)")


def describe(error: BaseException) -> str:
  """The message a user needs: the error and, if a library wrapped one, the OS error under it."""
  override = unknown_override(error, sys.argv)
  if override:
    return override
  lines = f"{type(error).__name__}: {error}".rstrip().splitlines() or [type(error).__name__]
  if len(lines) > MAX_MESSAGE_LINES:
    lines = lines[:MAX_MESSAGE_LINES - 1] + [f"  ... ({len(lines) - MAX_MESSAGE_LINES + 1} more lines)"]
  os_errors = [e for e in _chain(error)[1:] if isinstance(e, OSError) and e.errno is not None]
  if os_errors and not isinstance(error, OSError):
    cause = os_errors[-1]
    name = errno.errorcode.get(cause.errno, str(cause.errno))
    lines.append(f"  caused by {type(cause).__name__} ({name}): {str(cause).splitlines()[0]}")
  return "\n".join(lines)


def write_traceback(error: BaseException, program: str) -> str:
  """Writes the full traceback to a file; returns where, or why it could not."""
  text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
  path = os.path.join(tempfile.gettempdir(), "bert_jax_errors", f"{program}-{os.getpid()}.txt")
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      f.write(text)
    return f"full traceback: {path}"
  except OSError as write_error:  # e.g. the disk that is full
    return f"(the traceback could not be written to {path}: {write_error}; set {TRACEBACK_ENV}=1 to see it)"


def _verbosity_given() -> bool:
  """Whether --verbosity (-v) was on the command line, parsed or not (flag parsing may be what failed)."""
  from absl import flags
  if flags.FLAGS.is_parsed() and "verbosity" in flags.FLAGS:
    return flags.FLAGS["verbosity"].present
  return any(arg.split("=")[0] in ("--verbosity", "-v", "-verbosity") for arg in sys.argv[1:])


def exit_with_error(error: BaseException, program: str, *, verbose: bool | None = None) -> NoReturn:
  """Prints `describe(error)` and the traceback's location to stderr, then exits with status 1."""
  if verbose is None:
    verbose = os.environ.get(TRACEBACK_ENV, "") not in ("", "0") or _verbosity_given()
  try:
    if verbose:
      traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    where = write_traceback(error, program)
    print(f"{program}: error: {describe(error)}\n{where}", file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
      stream.flush()
    for handler in std_logging.getLogger().handlers:
      handler.flush()
  finally:
    os._exit(1)
