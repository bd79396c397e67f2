"""bert_jax's trainer: model, data, optimizer and checkpoints wired together; the CLI is `main`.

`train` and `data_prep` install as top-level packages under these short, common names
(BUILD.md, "Packaging"). A different `data_prep` or `bert_jax` ahead on sys.path (a
folder of that name in the working directory, on PYTHONPATH, or another distribution)
would otherwise be imported silently and fail somewhere deep inside a run; so importing
`train` checks first that both are the ones installed beside it.
"""

import importlib.util as _importlib_util
import pathlib as _pathlib


def _check_siblings() -> None:
  home = _pathlib.Path(__file__).resolve().parent.parent
  for name in ("data_prep", "bert_jax"):
    spec = _importlib_util.find_spec(name)
    origin = spec.origin if spec is not None else None
    if origin is None or _pathlib.Path(origin).resolve().parent.parent != home:
      found = origin or (f"a namespace package at {list(spec.submodule_search_locations)}" if spec else "nothing")
      raise ImportError(
          f"bert_jax's `train` package ({home / 'train'}) needs the `{name}` package installed beside it "
          f"({home / name}), but `import {name}` finds {found}: another package of that name comes first "
          f"on sys.path (the working directory, PYTHONPATH or another installed distribution). Remove or "
          f"rename that one, or run from a directory without it (the bert-jax-* commands do not read the "
          f"working directory).")


_check_siblings()
