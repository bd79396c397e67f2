"""`--help` of the console scripts (bert-jax-train, -predict, -export) lists their flags.

absl's --help shows the key flags of the module named by sys.argv[0]. Under
`python -m train.main` that is the module itself; under a console script it is the
launcher in bin/, which defines no flags, so --help listed none.
"""

import sys
from collections.abc import Callable, Sequence

from absl import app, flags


def list_flags_in_help(module_name: str) -> None:
  """Makes `module_name`'s flags the ones --help lists for this process's sys.argv[0]."""
  for flag in flags.FLAGS.get_key_flags_for_module(module_name):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def run_script(module_name: str, define_flags: Callable[[], None], main: Callable[[Sequence[str]], None]) -> None:
  """A console script's entry point: define its flags, list them in --help, run `main` under absl."""
  define_flags()
  list_flags_in_help(module_name)
  app.run(main)
