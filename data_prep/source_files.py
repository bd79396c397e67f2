"""Where each source file lives: a local copy if there is one, else its public URL.

A builder asks `locate(remote_file, dl_manager, ...)` for a path and gets the
first of:

1. `local_dir`, when the caller names one (an explicit choice: if the file is
   not there, that is an error, not a reason to go online);
2. the TFDS manual directory (`DownloadConfig(manual_dir=...)`, default
   `<tfds_dir>/downloads/manual`), when it holds the file;
3. the default data root: `$BERT_JAX_DATA`, else `<repo>/../shared/data`, so a
   fresh clone next to the course data prepares offline with no manual step;
4. a download of the public file through the TFDS download manager.

Local directories may hold the file directly or under its `cs224n/` or `extra/`
subdirectory, the layout of `../shared/data`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import zipfile

from data_prep.errors import MissingDataFileError, MissingDataRootError

DATA_ROOT_ENV = "BERT_JAX_DATA"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# The CS224N default final project's public data folder (Stanford CS224N, 2023+).
CS224N_BASE_URL = "https://raw.githubusercontent.com/gpoesia/minbert-default-final-project/main/data/"
# SICK, full release (train/trial/test marked by the SemEval_set column), on Zenodo.
SICK_URL = "https://zenodo.org/record/2787612/files/SICK.zip?download=1"


@dataclasses.dataclass(frozen=True)
class RemoteFile:
  """One source file: its local name, its subdirectory in the data root, and its URL.

  `archive_member` is set when the URL serves a zip holding the file under
  another name (SICK.zip -> SICK.txt); the local copy is the bare file.
  """
  filename: str
  subdir: str
  url: str
  archive_member: str | None = None


def cs224n_file(filename: str) -> RemoteFile:
  return RemoteFile(filename=filename, subdir="cs224n", url=CS224N_BASE_URL + filename)


SICK_FILE = RemoteFile(filename="sick2014.csv", subdir="extra", url=SICK_URL, archive_member="SICK.txt")


def default_data_root() -> pathlib.Path:
  """`$BERT_JAX_DATA`, else the `shared/data` directory beside the repository."""
  env = os.environ.get(DATA_ROOT_ENV)
  return pathlib.Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def _candidates(directory: os.PathLike, remote: RemoteFile) -> list[pathlib.Path]:
  directory = pathlib.Path(directory)
  return [directory / remote.subdir / remote.filename, directory / remote.filename]


def find_local(directory: os.PathLike, remote: RemoteFile) -> pathlib.Path | None:
  for path in _candidates(directory, remote):
    if path.is_file():
      return path
  return None


def check_data_root(local_dir: os.PathLike) -> pathlib.Path:
  """`local_dir` as a Path, or MissingDataRootError when it is not an existing directory.

  An explicit data root that is not there is a typo or an unmounted disk; going
  on (to another root, or to data prepared earlier) would train on other data.
  """
  path = pathlib.Path(local_dir).expanduser()
  if not path.is_dir():
    raise MissingDataRootError(path)
  return path


def locate_local(remote: RemoteFile, *, local_dir: os.PathLike | None = None,
                 manual_dir: os.PathLike | None = None) -> tuple[pathlib.Path | None, list[str]]:
  """The local copy of `remote` that `locate` would use (steps 1-3), and the places looked in.

  Returns (None, looked_in) when only a download could provide it.

  Raises:
    MissingDataRootError: `local_dir` is not a directory.
    MissingDataFileError: `local_dir` is given but lacks the file.
  """
  if local_dir is not None:
    local_dir = check_data_root(local_dir)
    found = find_local(local_dir, remote)
    if found:
      return found, []
    raise MissingDataFileError(remote.filename, [str(p) for p in _candidates(local_dir, remote)],
                               remote.url)
  looked_in: list[str] = []
  for directory in ([manual_dir] if manual_dir is not None else []) + [default_data_root()]:
    found = find_local(directory, remote)
    if found:
      return found, looked_in
    looked_in += [str(p) for p in _candidates(directory, remote)]
  return None, looked_in


def locate(remote: RemoteFile, dl_manager=None, *, local_dir: os.PathLike | None = None,
           allow_download: bool = True) -> pathlib.Path:
  """The path of `remote`'s file, from the first place that has it (see module doc).

  Raises:
    MissingDataRootError: `local_dir` is not a directory.
    MissingDataFileError: naming every place looked in and the URL.
  """
  found, looked_in = locate_local(remote, local_dir=local_dir, manual_dir=_manual_dir(dl_manager))
  if found:
    return found
  if not allow_download or dl_manager is None:
    raise MissingDataFileError(remote.filename, looked_in, remote.url)
  try:
    return _download(remote, dl_manager)
  except Exception as e:  # offline, moved URL, ...: the message says where else to look
    raise MissingDataFileError(remote.filename, looked_in, remote.url,
                               download_error=f"{type(e).__name__}: {e}".splitlines()[0]) from e


def _manual_dir(dl_manager) -> pathlib.Path | None:
  """The TFDS manual directory if one is configured and exists, else None.

  `DownloadManager.manual_dir` raises when the directory is missing or empty;
  for us that only means "not there", since the manual copy is optional.
  """
  if dl_manager is None:
    return None
  try:
    return pathlib.Path(dl_manager.manual_dir)
  except (AssertionError, ValueError):
    return None


def _download(remote: RemoteFile, dl_manager) -> pathlib.Path:
  if remote.archive_member is None:
    return pathlib.Path(dl_manager.download(remote.url))
  archive = pathlib.Path(dl_manager.download(remote.url))
  # Extract just the member we need, next to the archive, once.
  target = archive.parent / f"{archive.name}.{remote.archive_member}"
  if not target.exists():
    with zipfile.ZipFile(archive) as zipped:
      names = [n for n in zipped.namelist() if n.rsplit("/", 1)[-1] == remote.archive_member]
      if not names:
        raise FileNotFoundError(f"{archive} has no member {remote.archive_member}")
      tmp = target.with_suffix(target.suffix + ".tmp")
      tmp.write_bytes(zipped.read(names[0]))
      tmp.replace(target)
  return target
