"""Shared test setup: 8 simulated CPU devices, and where the shared data lives."""

import os
import pathlib

# Must be set before jax initialises its backends: multi-device tests run on
# 8 simulated CPU devices, single-device tests simply use device 0.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("BERT_JAX_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
  """The course CSVs beside the project; tests that need them skip loudly without them."""
  if not (SHARED_DATA / "cs224n").is_dir():
    pytest.skip(f"no CS224N data at {SHARED_DATA}/cs224n (set BERT_JAX_DATA)")
  return SHARED_DATA
