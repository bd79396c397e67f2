"""The multi-task sampler: schedules, task proportions, device multiples and resume."""

import json
import math

import numpy as np
import pytest

from data_prep import sampler as sampler_lib
from data_prep.sampler import MultiTaskSampler, allocate_batch_sizes, anneal_alpha, task_weights
from tests.test_data_pipeline import synthetic_split

SIZES = {"sst": 40, "para": 100, "sts": 20}


@pytest.fixture(scope="module")
def splits():
  rng = np.random.default_rng(0)
  return {"sst": synthetic_split(rng.integers(3, 40, SIZES["sst"])),
          "para": synthetic_split(rng.integers(3, 40, SIZES["para"]), pair_encoding="separate"),
          "sts": synthetic_split(rng.integers(3, 40, SIZES["sts"]), pair_encoding="separate")}


BUCKETS = {"sst": (16, 40), "para": (24, 40), "sts": (8, 16, 40)}


def make(splits, **kwargs):
  defaults = dict(schedule="round_robin", proportions="size", total_batch_size=16, num_epochs=3, seed=0)
  return MultiTaskSampler(splits, BUCKETS, **{**defaults, **kwargs})


def test_sequential_runs_one_task_epoch_after_another(splits):
  sampler = make(splits, schedule="sequential", total_batch_size=8, num_epochs=2)
  per_task = {t: math.ceil(n / 8) for t, n in SIZES.items()}
  assert sampler.steps_per_epoch(0) == sum(per_task.values()) == 5 + 13 + 3
  steps = list(sampler)
  assert len(steps) == sampler.total_steps() == 2 * 21
  tasks = [next(iter(step)) for step in steps]
  assert all(len(step) == 1 for step in steps)
  assert tasks[:21] == ["sst"] * 5 + ["para"] * 13 + ["sts"] * 3
  assert tasks[21:] == tasks[:21]
  # Each task's epoch covers its examples exactly once.
  index = np.concatenate([s["para"]["index"] for s in steps[5:18]])
  assert sorted(index[index >= 0]) == list(range(SIZES["para"]))


def test_round_robin_has_every_task_every_step(splits):
  sampler = make(splits, total_batch_size=16, num_epochs=2)
  assert sampler.steps_per_epoch() == math.ceil(sum(SIZES.values()) / 16) == 10
  steps = list(sampler)
  assert len(steps) == 20
  sizes = sampler.batch_sizes(0)
  for step in steps:
    assert set(step) == {"sst", "para", "sts"}
    assert {t: b["labels"].shape[0] for t, b in step.items()} == sizes
  assert sampler.epoch == 2 and sampler.step_in_epoch == 0 and sampler.global_step == 20


@pytest.mark.parametrize("proportions,expected", [
    ("size", {"sst": 4, "para": 10, "sts": 2}),       # 16 * (40, 100, 20) / 160
    ("balanced", {"sst": 6, "para": 5, "sts": 5}),    # 16 / 3, largest remainders; ties to the first
])
def test_proportions(proportions, expected, splits):
  assert make(splits, proportions=proportions).batch_sizes(0) == expected


def test_annealed_proportions_go_from_size_to_square_root(splits):
  sampler = make(splits, proportions="annealed", total_batch_size=160, num_epochs=5)
  assert anneal_alpha(0, 5) == 1.0 and anneal_alpha(4, 5) == 0.5 and anneal_alpha(2, 5) == 0.75
  assert sampler.batch_sizes(0) == {"sst": 40, "para": 100, "sts": 20}
  sqrt = {t: math.sqrt(n) for t, n in SIZES.items()}
  last = sampler.batch_sizes(4)
  for t in SIZES:  # proportional to sqrt(N_t), up to rounding to whole examples
    assert last[t] == pytest.approx(160 * sqrt[t] / sum(sqrt.values()), abs=1)
  assert sum(last.values()) == 160
  assert last["para"] < 100 and last["sts"] > 20  # large task shrinks, small task grows


def test_batch_sizes_are_device_multiples_that_sum_to_the_total():
  weights = task_weights({"sst": 8544, "para": 141_000, "sts": 6040}, "size")
  sizes = allocate_batch_sizes(weights, total_batch_size=64, num_devices=8)
  assert sum(sizes.values()) == 64 and all(s % 8 == 0 and s >= 8 for s in sizes.values())
  assert sizes == {"sst": 8, "para": 48, "sts": 8}  # each task gets at least one example per device
  with pytest.raises(ValueError, match="cannot give each of 3 tasks one example per device"):
    allocate_batch_sizes(weights, total_batch_size=16, num_devices=8)
  with pytest.raises(ValueError, match="total batch size 20 .* device count 8"):
    allocate_batch_sizes(weights, total_batch_size=20, num_devices=8)


def test_round_robin_with_eight_devices(splits):
  sampler = make(splits, total_batch_size=32, num_devices=8, proportions="annealed")
  for step in range(sampler.total_steps()):
    batches = next(sampler)
    assert all(b["input_ids"].shape[0] % 8 == 0 for b in batches.values())
  with pytest.raises(StopIteration):
    next(sampler)


@pytest.mark.parametrize("schedule,proportions", [("sequential", "size"), ("round_robin", "annealed")])
def test_resumed_sampler_yields_exactly_the_same_batches(schedule, proportions, splits):
  original = make(splits, schedule=schedule, proportions=proportions, total_batch_size=16, num_epochs=3)
  for _ in range(original.steps_per_epoch() + 3):  # past an epoch boundary (and, annealed, a size change)
    next(original)
  state = json.loads(json.dumps(original.get_state()))
  restored = make(splits, schedule=schedule, proportions=proportions, total_batch_size=16, num_epochs=3)
  restored.set_state(state)
  assert (restored.epoch, restored.step_in_epoch) == (original.epoch, original.step_in_epoch)
  remaining = list(original)
  again = list(restored)
  assert len(again) == len(remaining) > 0
  for expected, actual in zip(remaining, again):
    assert expected.keys() == actual.keys()
    for task in expected:
      for key in expected[task]:
        np.testing.assert_array_equal(actual[task][key], expected[task][key])


def test_state_from_other_settings_is_refused(splits):
  state = make(splits, seed=0).get_state()
  with pytest.raises(ValueError, match=r"different settings \['seed'\]"):
    make(splits, seed=1).set_state(state)


def test_unknown_schedule_or_proportions(splits):
  with pytest.raises(ValueError, match="schedule='random'"):
    make(splits, schedule="random")
  with pytest.raises(ValueError, match="proportions='uniform'"):
    make(splits, proportions="uniform")
  assert sampler_lib.TASK_SCHEDULES == ("sequential", "round_robin")


def _examples_per_epoch(sampler, task):
  """Real (non-filler) examples of `task` in the sampler's first epoch."""
  count = 0
  for _ in range(sampler.steps_per_epoch(0)):
    batch = next(sampler).get(task)
    if batch is not None:
      count += int(np.sum(batch["weights"] > 0))
  return count


@pytest.mark.parametrize("schedule", ["sequential", "round_robin"])
def test_epoch_fraction_trains_on_that_share_of_a_task(splits, schedule):
  full = make(splits, schedule=schedule, total_batch_size=16, num_epochs=2)
  quarter = make(splits, schedule=schedule, total_batch_size=16, num_epochs=2, epoch_fractions={"para": 0.25})
  assert quarter.epoch_sizes == {"sst": 40, "para": 25, "sts": 20}
  assert _examples_per_epoch(full, "para") == 100
  # ~25, give or take the last step's batch (sequential 2 x 16 = 32; round-robin 6 steps x 5 = 30).
  assert _examples_per_epoch(quarter, "para") == pytest.approx(25, abs=quarter.batch_sizes(0)["para"])
  assert quarter.steps_per_epoch() < full.steps_per_epoch()
  if schedule == "sequential":  # SST and STS keep their whole epoch
    assert quarter.steps_per_epoch() == math.ceil(40 / 16) + math.ceil(25 / 16) + math.ceil(20 / 16)
  # The next epoch goes on with Quora pairs the first one did not reach: 2 epochs of ~25, none repeated.
  again = make(splits, schedule=schedule, total_batch_size=16, num_epochs=2, epoch_fractions={"para": 0.25})
  seen = [i for step in again for i in step.get("para", {"index": np.array([], int)})["index"] if i >= 0]
  assert len(seen) == len(set(seen)) and 40 <= len(seen) <= 2 * 32


def test_epoch_fraction_zero_leaves_the_task_out(splits):
  for schedule in ("sequential", "round_robin"):
    sampler = make(splits, schedule=schedule, total_batch_size=16, num_epochs=1, epoch_fractions={"para": 0.0})
    steps = list(sampler)
    assert steps and all("para" not in step for step in steps)
    assert len(steps) == (math.ceil(40 / 16) + math.ceil(20 / 16) if schedule == "sequential"
                          else math.ceil(60 / 16))


def test_epoch_fraction_resumes_and_default_state_is_unchanged(splits):
  original = make(splits, total_batch_size=16, num_epochs=2, epoch_fractions={"para": 0.5})
  for _ in range(original.steps_per_epoch() + 1):
    next(original)
  restored = make(splits, total_batch_size=16, num_epochs=2, epoch_fractions={"para": 0.5})
  restored.set_state(json.loads(json.dumps(original.get_state())))
  for expected, actual in zip(original, restored):
    np.testing.assert_array_equal(actual["para"]["index"], expected["para"]["index"])
  # A fraction of 1 is the plain sampler, state included (runs saved before fractions existed resume).
  assert "epoch_sizes" not in make(splits, epoch_fractions={"para": 1.0}).get_state()["config"]
  with pytest.raises(ValueError, match=r"different settings \['epoch_sizes'\]"):
    make(splits).set_state(make(splits, epoch_fractions={"para": 0.5}).get_state())


@pytest.mark.parametrize("schedule", ["sequential", "round_robin"])
def test_an_epoch_fraction_above_one_repeats_the_task_within_an_epoch(splits, schedule):
  twice = make(splits, schedule=schedule, total_batch_size=16, num_epochs=1, epoch_fractions={"sst": 2.0})
  assert twice.epoch_sizes == {"sst": 80, "para": 100, "sts": 20}
  seen = [i for step in twice for i in step.get("sst", {"index": np.array([], int)})["index"] if i >= 0]
  # Every SST example twice, give or take the last step's batch, each pass a new shuffle.
  assert len(seen) == pytest.approx(80, abs=twice.batch_sizes(0)["sst"])
  counts = np.bincount(seen, minlength=40)
  assert counts.min() >= 1 and counts.max() <= 3 and np.sum(counts >= 2) >= 30
  if schedule == "round_robin":  # under "size", twice the share of each step
    assert twice.batch_sizes(0)["sst"] > make(splits, total_batch_size=16, num_epochs=1).batch_sizes(0)["sst"]


def test_bad_epoch_fractions_are_refused(splits):
  for bad in (-0.5, float("nan"), float("inf")):
    with pytest.raises(ValueError, match="epoch fraction of para is .*; expected a finite number >= 0"):
      make(splits, epoch_fractions={"para": bad})
  with pytest.raises(ValueError, match=r"names tasks \['quora'\]"):
    make(splits, epoch_fractions={"quora": 0.5})
  with pytest.raises(ValueError, match="leave no task to train"):
    make(splits, epoch_fractions={"sst": 0.0, "para": 0.0, "sts": 0.0})
