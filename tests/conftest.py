"""Shared test setup: 8 simulated CPU devices, one XLA cache, the tiny world, and where the shared data lives."""

import os
import pathlib
import shutil
import tempfile

# Must be set before jax initialises its backends: multi-device tests run on
# 8 simulated CPU devices, single-device tests simply use device 0.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# One persistent XLA cache for the whole session: in this process, in pytest-xdist's workers (they
# inherit the variable from the process that starts them) and in the trainer subprocesses the
# tests start, so the tiny model's executables are compiled once, not once per module or worker.
_CACHE_VARIABLE = "BERT_JAX_TESTS_XLA_CACHE"
_OWNS_CACHE = _CACHE_VARIABLE not in os.environ
XLA_CACHE = pathlib.Path(os.environ.setdefault(_CACHE_VARIABLE, tempfile.mkdtemp(prefix="bert_jax_tests_xla_cache_")))
SHARED_DATA = pathlib.Path(os.environ.get("BERT_JAX_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The course CSVs beside the project; tests that need them skip loudly without them."""
  if not (SHARED_DATA / "cs224n").is_dir():
    pytest.skip(f"no CS224N data at {SHARED_DATA}/cs224n (set BERT_JAX_DATA)")
  return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
  """A tiny random BERT exported as a HF directory, and a miniature ../shared/data (see tests/test_train.py)."""
  import jax
  import jax.numpy as jnp

  from bert_jax import checkpoints as bert_checkpoints
  from bert_jax.config import BertConfig
  from bert_jax.modeling import BertModel
  from tests.test_data_csv_rows import WORDS, write_course_files

  root = tmp_path_factory.mktemp("world")
  special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  vocab = special + sorted(set(WORDS)) + ["?", "."]
  (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
  bert_config = BertConfig.tiny(vocab_size=len(vocab), hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0)
  ids = jnp.ones((1, 4), jnp.int32)
  params = BertModel(bert_config).init(jax.random.key(0), ids)["params"]
  checkpoint = bert_checkpoints.export_hf_checkpoint(params, bert_config, root / "vocab.txt", root / "ckpt")
  data_root = write_course_files(root / "data")
  return {"checkpoint": str(checkpoint), "data_root": str(data_root), "root": root, "jax_cache": XLA_CACHE}


def pytest_addoption(parser):
  parser.addoption("--kills", type=int, default=8,
                   help="SIGKILLs in tests/test_kill_resume.py (more: a longer hunt for resume bugs)")


def pytest_configure(config):
  import jax
  jax.config.update("jax_compilation_cache_dir", str(XLA_CACHE))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  # .ci/run runs every test; `-m "not slow"` skips the ones that start the trainer many times.
  config.addinivalue_line("markers", "slow: starts the trainer many times (minutes); CI runs it")
  config.addinivalue_line("markers", "multiprocess: starts several train.main processes as one JAX job; CI runs it")


def pytest_unconfigure(config):
  if _OWNS_CACHE and not hasattr(config, "workerinput"):  # the process that made it, not a worker
    shutil.rmtree(XLA_CACHE, ignore_errors=True)
