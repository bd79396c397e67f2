"""The conflict methods of train/conflicts/ against TorchJD's aggregators and the papers' formulas.

Each method runs as the trainer runs it: the optax transformation, jitted, on a
pytree of float32 task gradients (two leaves cut from a random Jacobian J,
T x 40). TorchJD (`torchjd.aggregation`, float64, its own solvers: quadprog,
Clarabel, ECOS) aggregates the same J. Compared is the update itself, J^T w.

Cases, for T = 2, 3, 4: "conflicting" (one task pulls against another: the
pair's cosine is about -0.95, so even the mean gradient conflicts with one of them), "aligned" (all entries positive, so no pair
conflicts) and "rank_deficient" (the last gradient is a combination of the
others, G singular).

Tolerances (max abs difference of J^T w, whose entries are O(1)): float32
against float64 leaves about eps32 * cond(G) in the weights; the trace-
normalised Grams here have cond(G) up to ~1e3 (1e4 after TorchJD's 1e-4 ridge
for UPGrad and DualProj), so the closed forms and exact solves agree to ~1e-6
and 2e-5 is the bound. CAGrad's reference is Clarabel's interior point, which
stops at a relative gap of 1e-8 on the objective; where the objective is flat
that leaves ~1e-4 in w, so its bound is 1e-3, and the test also checks that our
w's objective is no worse than TorchJD's. Nash-MTL's reference (sequential
convex programs, stopping at a residual of 1e-3) reached ~1e-6 here; bound 1e-4.
Where TorchJD has no method (uncertainty weighting, DWA, FAMO) or randomises
differently (PCGrad, GradVac: torch.randperm is replaced by our visiting order)
the test says so below.
"""

import warnings

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import torch
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from torchjd import aggregation as tjd

from train import optim, steps
from train.conflicts import dual_cone, engine, loss_weighting, mgda, nash_mtl, registry
from train.conflicts import pcgrad as pcgrad_lib
from train.configs import base
from train.state import TrainState

torch.set_default_dtype(torch.float64)
NUM_COLUMNS = 40
CASES = ("conflicting", "aligned", "rank_deficient")


def jacobian(num_tasks: int, case: str, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng([num_tasks, CASES.index(case), seed])
  matrix = rng.normal(size=(num_tasks, NUM_COLUMNS))
  if case == "conflicting":
    matrix[1] = -1.5 * matrix[0] + 0.5 * matrix[1]  # cosine about -0.95: even the mean conflicts
  elif case == "aligned":
    matrix = np.abs(matrix)
  elif num_tasks == 2:
    matrix[1] = 2.0 * matrix[0]
  else:
    matrix[-1] = 0.7 * matrix[0] - 0.5 * matrix[1]
  return matrix


def as_tree(matrix: np.ndarray) -> dict:
  """The rows of J as a pytree of stacked float32 leaves [T, 4, 5] and [T, 20]."""
  matrix = jnp.asarray(matrix, jnp.float32)
  return {"kernel": matrix[:, :20].reshape(-1, 4, 5), "bias": matrix[:, 20:]}


def as_vector(tree: dict) -> np.ndarray:
  return np.concatenate([np.asarray(tree["kernel"]).ravel(), np.asarray(tree["bias"])])


_COMPILED = {}


def compiled(tx, key):
  """One jitted `update` per method, options and T, shared by the tests: compiling is their main cost."""
  if key not in _COMPILED:
    _COMPILED[key] = (tx, jax.jit(lambda g, s, k, l: tx.update(g, s, rng=k, losses=l)))
  return _COMPILED[key]


def run_method(tx, matrices, rngs=None, losses=None, key=None):
  """J^T w of each step (float64 numpy), the transformation jitted and its state carried."""
  if key is not None:
    tx, update = compiled(tx, key)
  else:
    update = jax.jit(lambda g, s, k, l: tx.update(g, s, rng=k, losses=l))
  state = tx.init(None)
  outputs = []
  for step, matrix in enumerate(matrices):
    key = rngs[step] if rngs is not None else jax.random.PRNGKey(step)
    loss = None if losses is None else jnp.asarray(losses[step], jnp.float32)
    combined, state = update(as_tree(matrix), state, key, loss)
    outputs.append(as_vector(combined).astype(np.float64))
  return outputs, state


def torchjd_outputs(aggregator, matrices):
  return [aggregator(torch.tensor(m)).numpy() for m in matrices]


def assert_close(ours, reference, tolerance, label):
  difference = max(np.max(np.abs(o - r)) for o, r in zip(ours, reference))
  assert difference <= tolerance, f"{label}: max |ours - reference| = {difference:.2e} > {tolerance:.0e}"


# ---- gradient methods against TorchJD --------------------------------------------------------------

STATELESS = {
    # name: (our transformation, TorchJD aggregator, tolerance). Default options unless named.
    "mgda": (lambda t: optim_method("mgda", t), lambda t: tjd.MGDA(), 2e-5),
    "imtl_g": (lambda t: optim_method("imtl_g", t), lambda t: tjd.IMTLG(), 2e-5),
    "aligned_mtl": (lambda t: optim_method("aligned_mtl", t), lambda t: tjd.AlignedMTL(scale_mode="min"), 2e-5),
    "aligned_mtl_median": (lambda t: registry.METHODS["aligned_mtl"].build(t, scale_mode="median"),
                           lambda t: tjd.AlignedMTL(scale_mode="median"), 2e-5),
    "aligned_mtl_rmse": (lambda t: registry.METHODS["aligned_mtl"].build(t, scale_mode="rmse"),
                         lambda t: tjd.AlignedMTL(scale_mode="rmse"), 2e-5),
    "upgrad": (lambda t: optim_method("upgrad", t), lambda t: tjd.UPGrad(), 2e-5),
    "dualproj": (lambda t: optim_method("dualproj", t), lambda t: tjd.DualProj(), 2e-5),
    "cagrad": (lambda t: optim_method("cagrad", t), lambda t: tjd.CAGrad(c=0.4), 1e-3),
    "cagrad_c1.5": (lambda t: registry.METHODS["cagrad"].build(t, c=1.5), lambda t: tjd.CAGrad(c=1.5), 1e-3),
}
# Options that only change a branch of the same solve run at T = 3 alone, to keep compiling short.
GRAMIAN_CASES = [(name, t) for name in sorted(STATELESS) for t in (2, 3, 4)
                 if t == 3 or name in ("mgda", "imtl_g", "aligned_mtl", "upgrad", "dualproj", "cagrad")]


@pytest.mark.parametrize("name,num_tasks", GRAMIAN_CASES)
def test_gramian_methods_match_torchjd(name, num_tasks):
  ours_fn, reference_fn, tolerance = STATELESS[name]
  matrices = [jacobian(num_tasks, case) for case in CASES]
  ours, _ = run_method(ours_fn(num_tasks), matrices, key=(name, num_tasks))
  reference = torchjd_outputs(reference_fn(num_tasks), matrices)
  for case, o, r in zip(CASES, ours, reference):
    assert_close([o], [r], tolerance, f"{name} T={num_tasks} {case}")
  # Not vacuous: on the conflicting case the method differs from the plain sum and the mean.
  assert not np.allclose(ours[0], matrices[0].sum(0), atol=1e-3)
  assert not np.allclose(ours[0], matrices[0].mean(0), atol=1e-3)


def test_cagrad_objective_is_no_worse_than_torchjds():
  # Where the two updates differ (up to 1e-3), ours is at least as good a minimiser of the dual.
  for num_tasks in (2, 3, 4):
    for case in CASES:
      matrix = jacobian(num_tasks, case)
      gram = matrix @ matrix.T / np.trace(matrix @ matrix.T)
      mean = np.full(num_tasks, 1 / num_tasks)
      rho = 0.4 * np.sqrt(mean @ gram @ mean)
      objective = lambda w: w @ gram @ mean + rho * np.sqrt(w @ gram @ w)
      tx, update = compiled(optim_method("cagrad", num_tasks), ("cagrad", num_tasks))
      ours = np.asarray(update(as_tree(matrix), tx.init(None), jax.random.PRNGKey(0), None)[1].weights, np.float64)
      reference = tjd.CAGradWeighting(c=0.4)(torch.tensor(matrix @ matrix.T)).numpy()
      to_simplex = lambda weights: (weights - mean) / np.sum(weights - mean)
      assert objective(to_simplex(ours)) <= objective(to_simplex(reference)) + 1e-6, (num_tasks, case)


def test_mgda_against_the_exact_min_norm_point():
  # TorchJD runs the same Frank-Wolfe loop; how far that loop is from the true
  # minimum-norm point (all 2^T - 1 faces solved in float64 here) is the method's
  # own accuracy. Pinned: solver="exact" within 2e-5 of it; Frank-Wolfe with the
  # defaults measurably off (0.11 in the update at T = 4 when gradients nearly cancel).
  from itertools import product
  worst, worst_frank_wolfe = 0.0, 0.0
  exact_fn, frank_wolfe_fn = jax.jit(mgda.mgda_exact_weights), jax.jit(mgda.mgda_weights)
  for num_tasks in (2, 3, 4):
    for case in CASES:
      matrix = jacobian(num_tasks, case)
      gram = matrix @ matrix.T
      best, best_value = None, np.inf
      for support in product([0, 1], repeat=num_tasks):
        support = np.array(support, bool)
        if not support.any():
          continue
        sub = gram[np.ix_(support, support)] + 1e-12 * np.eye(support.sum())
        z = np.linalg.solve(sub, np.ones(support.sum()))
        if np.all(z >= -1e-12):
          w = np.zeros(num_tasks)
          w[support] = z / z.sum()
          if w @ gram @ w < best_value:
            best, best_value = w, w @ gram @ w
      exact = np.asarray(exact_fn(jnp.asarray(gram, jnp.float32)), np.float64)
      frank_wolfe = np.asarray(frank_wolfe_fn(jnp.asarray(gram, jnp.float32)), np.float64)
      worst = max(worst, np.max(np.abs(matrix.T @ (exact - best))))
      worst_frank_wolfe = max(worst_frank_wolfe, np.max(np.abs(matrix.T @ (frank_wolfe - best))))
  assert worst < 2e-5, worst
  assert 1e-3 < worst_frank_wolfe < 0.2, worst_frank_wolfe


def patched_randperm(orders_per_call, include_self):
  """A torch.randperm that replays our visiting orders: TorchJD shuffles with torch's generator."""
  def randperm(n, *args, **kwargs):
    task, order = orders_per_call.pop(0)
    others = [j for j in range(len(order) + 1) if j != task]
    if include_self:  # PCGrad permutes all m tasks and skips i
      return torch.tensor([task] + [int(j) for j in order])
    return torch.tensor([others.index(int(j)) for j in order])  # GradVac permutes the others
  return randperm


@pytest.mark.parametrize("num_tasks", [2, 3, 4])
@pytest.mark.parametrize("name", ["pcgrad", "gradvac"])
def test_surgery_methods_match_torchjd_with_the_same_visiting_orders(name, num_tasks, monkeypatch):
  matrices = [jacobian(num_tasks, case, seed) for seed in range(2) for case in CASES[:2]]  # 4 steps
  keys = [jax.random.PRNGKey(100 + k) for k in range(len(matrices))]
  if name == "pcgrad":
    tx, aggregator, include_self = optim_method("pcgrad", num_tasks), tjd.PCGrad(), True
  else:
    tx, aggregator, include_self = registry.METHODS["gradvac"].build(num_tasks, beta=0.3), tjd.GradVac(beta=0.3), False
  ours, state = run_method(tx, matrices, rngs=keys, key=(name if name == "pcgrad" else "gradvac_beta0.3", num_tasks))
  calls = []
  monkeypatch.setattr(torch, "randperm", patched_randperm(calls, include_self))
  reference = []
  for key, matrix in zip(keys, matrices):
    orders = np.asarray(pcgrad_lib.task_orders(key, num_tasks))
    calls[:] = [(i, orders[i]) for i in range(num_tasks)]
    reference.append(aggregator(torch.tensor(matrix)).numpy())
    assert not calls
  assert_close(ours, reference, 2e-5, f"{name} T={num_tasks}")
  if name == "gradvac":  # the EMA targets carried over six steps agree too
    np.testing.assert_allclose(state.method_state["target_cosine"],
                               aggregator.gramian_weighting._phi_t.numpy(), atol=1e-6)
    # Not vacuous: GradVac with its learned targets is not PCGrad any more.
    pc, _ = run_method(optim_method("pcgrad", num_tasks), matrices, rngs=keys, key=("pcgrad", num_tasks))
    assert any(not np.allclose(o, p, atol=1e-4) for o, p in zip(ours, pc))


@pytest.mark.parametrize("num_tasks,max_norm", [(2, 1.0), (3, 1.0), (4, 1.0), (3, 0.0)])
def test_nash_mtl_matches_torchjd_and_solves_the_bargaining_equation(num_tasks, max_norm):
  matrices = [jacobian(num_tasks, case) for case in CASES]
  tx = nash_mtl.nash_mtl(num_tasks, max_norm=max_norm)
  ours, state = run_method(tx, matrices, key=(f"nash_mtl_{max_norm}", num_tasks))
  aggregator = tjd.NashMTL(n_tasks=num_tasks, max_norm=max_norm)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # cvxpy's "problem is not DPP" notice
    reference = torchjd_outputs(aggregator, matrices)
  assert_close(ours, reference, 1e-4, f"nash_mtl T={num_tasks} max_norm={max_norm}")
  # The paper's equation alpha_t (G alpha)_t = 1, checked in float64 on the last step.
  assert float(state.method_state["residual"]) < 1e-5
  if max_norm == 0.0:
    matrix = matrices[-1]
    alpha = np.asarray(state.weights, np.float64)
    np.testing.assert_allclose(alpha * (matrix @ matrix.T @ alpha), 1.0, atol=1e-4)
  else:
    assert all(np.linalg.norm(o) <= max_norm * (1 + 1e-5) for o in ours)


def test_nash_mtl_update_every_k_steps_reuses_the_weights():
  matrices = [jacobian(3, "conflicting", seed) for seed in range(3)]
  tx, update = compiled(nash_mtl.nash_mtl(3, max_norm=0.0, update_weights_every=2), ("nash_mtl_every2", 3))
  state = tx.init(None)
  weights = []
  for matrix in matrices:
    _, state = update(as_tree(matrix), state, jax.random.PRNGKey(0), None)
    weights.append(np.asarray(state.weights))
  np.testing.assert_array_equal(weights[0], weights[1])
  assert not np.allclose(weights[1], weights[2])


# ---- loss-weighting methods against the papers' formulas in numpy ---------------------------------

def numpy_adam(gradient, state, learning_rate, b1=0.9, b2=0.999, eps=1e-8):
  m, v, t = state
  t += 1
  m = b1 * m + (1 - b1) * gradient
  v = b2 * v + (1 - b2) * gradient ** 2
  step = -learning_rate * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
  return step, (m, v, t)


LOSSES = np.array([[1.2, 0.7, 2.0], [1.0, 0.72, 1.5], [0.9, 0.6, 1.6], [0.8, 0.65, 1.1],
                   [0.7, 0.5, 1.2], [0.72, 0.45, 0.9], [0.6, 0.4, 0.95]])


def test_uncertainty_weighting_matches_kendall_with_adam_on_log_variances():
  matrices = [jacobian(3, "conflicting", k) for k in range(len(LOSSES))]
  ours, state = run_method(loss_weighting.uncertainty_weighting(3, learning_rate=0.1), matrices, losses=LOSSES)
  s, adam = np.zeros(3), (np.zeros(3), np.zeros(3), 0)
  for matrix, loss, output in zip(matrices, LOSSES, ours):
    weights = np.exp(-s)  # d/dtheta of sum_t exp(-s_t) L_t + s_t
    np.testing.assert_allclose(output, matrix.T @ weights, rtol=1e-5, atol=2e-5)
    step, adam = numpy_adam(1 - np.exp(-s) * loss, adam, 0.1)  # d/ds_t of the same objective
    s = s + step
  np.testing.assert_allclose(state.method_state["log_variance"], s, atol=1e-5)
  assert np.ptp(s) > 0.05  # the tasks' weights did move apart


def test_dwa_matches_the_papers_formula_over_windows():
  window, temperature = 2, 2.0
  matrices = [jacobian(3, "aligned", k) for k in range(len(LOSSES))]
  ours, _ = run_method(loss_weighting.dwa(3, temperature=temperature, window=window), matrices, losses=LOSSES)
  for step, (matrix, output) in enumerate(zip(matrices, ours)):
    done = step // window  # windows complete before this step
    if done < 2:
      weights = np.ones(3)
    else:
      last = LOSSES[(done - 1) * window:done * window].mean(0)
      before = LOSSES[(done - 2) * window:(done - 1) * window].mean(0)
      ratio = last / before
      weights = 3 * np.exp(ratio / temperature) / np.exp(ratio / temperature).sum()
      assert not np.allclose(weights, 1.0, atol=1e-3)
    np.testing.assert_allclose(output, matrix.T @ weights, atol=2e-5, err_msg=f"step {step}")


def test_famo_matches_the_official_update_in_numpy():
  matrices = [jacobian(3, "conflicting", k) for k in range(len(LOSSES))]
  learning_rate, gamma = 0.025, 1e-3
  ours, state = run_method(optim_method("famo"), matrices, losses=LOSSES, key=("famo", 3))
  logits, adam, previous = np.zeros(3), (np.zeros(3), np.zeros(3), 0), None
  softmax = lambda x: np.exp(x - x.max()) / np.exp(x - x.max()).sum()
  for matrix, loss, output in zip(matrices, LOSSES, ours):
    loss = loss + 1e-8
    if previous is not None:
      delta = np.log(previous) - np.log(loss)
      z = softmax(logits)
      gradient = (np.diag(z) - np.outer(z, z)) @ delta + gamma * logits  # torch Adam's L2 decay
      step, adam = numpy_adam(gradient, adam, learning_rate)
      logits = logits + step
    z = softmax(logits)
    weights = (z / loss) / np.sum(z / loss)
    np.testing.assert_allclose(output, matrix.T @ weights, atol=2e-5)
    previous = loss
  np.testing.assert_allclose(state.method_state["logits"], logits, atol=1e-6)
  assert np.ptp(logits) > 1e-3


def test_loss_weighting_without_losses_says_what_to_pass():
  tx = loss_weighting.famo(3)
  with pytest.raises(ValueError, match="losses="):
    tx.update(as_tree(jacobian(3, "aligned")), tx.init(None))


# ---- the engine and its wiring ----------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(registry.METHODS))
def test_degenerate_grams_give_finite_weights_and_nonfinite_ones_a_nan_update(name):
  # Zero gradients, one zero task, identical tasks: nothing to divide by, nothing NaN.
  tx, update = compiled(optim_method(name), (name, 3))
  losses = jnp.ones(3) if registry.METHODS[name].needs_losses else None
  for matrix in (np.zeros((3, NUM_COLUMNS)), np.vstack([np.zeros(NUM_COLUMNS), jacobian(2, "aligned")]),
                 np.tile(jacobian(1, "aligned"), (3, 1))):
    _, state = update(as_tree(matrix), tx.init(None), jax.random.PRNGKey(0), losses)
    assert np.all(np.isfinite(np.asarray(state.weights))), matrix[:, 0]
  # An inf in a gradient: the update is NaN (which the trainer's guard refuses), not a plausible number.
  matrix = jacobian(3, "conflicting")
  matrix[1, 3] = np.inf
  combined, state = update(as_tree(matrix), tx.init(None), jax.random.PRNGKey(0), losses)
  assert np.all(np.isnan(np.asarray(state.weights)))
  assert np.all(np.isnan(as_vector(combined)))


def optim_method(name: str, num_tasks: int = 3):
  config = ml_collections.ConfigDict({"conflicts": registry.default_config()})
  config.conflicts.method = name
  return registry.create_conflict_transform(config, ("sst", "para", "sts", "extra")[:num_tasks])


def test_registry_errors_name_what_is_wrong():
  config = ml_collections.ConfigDict({"conflicts": registry.default_config(), "pcgrad": base.get_config().pcgrad})
  config.conflicts.method = "pcgard"
  with pytest.raises(ValueError, match=r"conflicts.method='pcgard'.*'upgrad'"):
    registry.create_conflict_transform(config, ("sst", "para", "sts"))
  config.conflicts.method = "mgda"
  config.pcgrad.enabled = True
  with pytest.raises(ValueError, match="two methods"):
    registry.create_conflict_transform(config, ("sst", "para", "sts"))
  config.conflicts.method = "sum"
  config.pcgrad.tasks = ("qqp",)
  with pytest.raises(ValueError, match="'qqp'"):
    registry.create_conflict_transform(config, ("sst", "para", "sts"))
  config.pcgrad.enabled = False
  config.conflicts.method = "cagrad"
  config.conflicts.cagrad.radius = 0.5
  with pytest.raises(ValueError, match=r"conflicts.cagrad has unknown options \['radius'\]"):
    registry.create_conflict_transform(config, ("sst", "para", "sts"))
  with pytest.raises(ValueError, match="scale_mode"):
    registry.METHODS["aligned_mtl"].build(3, scale_mode="max")


def test_pcgrad_enabled_and_method_pcgrad_build_the_same_optimizer():
  params = {"kernel": jnp.zeros((4, 5)), "bias": jnp.zeros(20)}
  stacked = as_tree(jacobian(3, "conflicting"))
  outputs = []
  for enabled, method in ((True, "sum"), (False, "pcgrad")):
    config = ml_collections.ConfigDict({"optim": base.get_config().optim, "pcgrad": base.get_config().pcgrad,
                                        "conflicts": registry.default_config()})
    config.optim.warmup_steps = 0
    config.pcgrad.enabled, config.conflicts.method = enabled, method
    config.pcgrad.tasks = ("sts",)
    assert optim.uses_per_task_gradients(config)
    tx = optim.create_optimizer(config, 10)
    updates, state = jax.jit(lambda g, s, p: tx.update(g, s, p, rng=jax.random.PRNGKey(3)))(
        stacked, tx.init(params), params)
    assert pcgrad_lib.find_pcgrad_state(state) is not None
    outputs.append(as_vector(updates))
  np.testing.assert_array_equal(outputs[0], outputs[1])
  config.pcgrad.enabled, config.conflicts.method = False, "sum"
  assert not optim.uses_per_task_gradients(config)


def test_apply_step_passes_losses_logs_weights_and_holds_on_a_nan_gradient():
  """The trainer's apply (train/steps.py) with a loss-weighting method, jitted as the trainer jits it."""
  params = {"dense": {"kernel": jnp.ones((4, 5)), "bias": jnp.zeros(20)}}
  config = ml_collections.ConfigDict({"optim": base.get_config().optim, "conflicts": registry.default_config()})
  config.optim.warmup_steps = 0
  config.conflicts.method = "famo"
  tx = optim.create_optimizer(config, 10)
  apply = jax.jit(steps.make_apply_gradients(tx, task_order=("sst", "para", "sts"),
                                             per_task_gradients=True, pass_losses=registry.needs_losses(config)),
                  donate_argnums=(0,))  # as the trainer compiles it
  state = TrainState.create(params, tx)
  tree = as_tree(jacobian(3, "conflicting"))
  grads = {t: {"dense": {"kernel": tree["kernel"][i], "bias": tree["bias"][i]}} for i, t in enumerate(("sst", "para", "sts"))}
  for losses in ({"sst": 1.0, "para": 0.5, "sts": 2.0}, {"sst": 0.5, "para": 0.5, "sts": 2.0}):
    state, metrics = apply(state, grads, {t: jnp.float32(v) for t, v in losses.items()}, jax.random.PRNGKey(0))
  # Second step: sst's loss halved and the others' stayed, so FAMO moved weight away from sst.
  weights = np.asarray(metrics["conflicts"]["weights"])
  z = np.asarray(jax.nn.softmax(engine.find_conflict_state(state.opt_state).method_state["logits"]))
  np.testing.assert_allclose(weights, (z / np.array([0.5, 0.5, 2.0])) / np.sum(z / np.array([0.5, 0.5, 2.0])), rtol=1e-5)
  assert z[0] < z[1] and np.isclose(z[1], z[2])
  assert np.asarray(metrics["conflicts"]["cosine"]).shape == (3, 3)
  # A NaN in one task's gradient: the existing non-finite path holds the step and names the task.
  bad = {**grads, "para": jax.tree.map(lambda v: v.at[0].set(jnp.nan), grads["para"])}
  before = jax.device_get(state.params)
  state, metrics = apply(state, bad, {"sst": jnp.float32(1), "para": jnp.float32(1), "sts": jnp.float32(1)},
                         jax.random.PRNGKey(1))
  assert list(np.asarray(metrics["first_nonfinite"])) == [2, 1]
  np.testing.assert_array_equal(jax.device_get(state.params)["dense"]["kernel"], before["dense"]["kernel"])


@pytest.mark.parametrize("name", sorted(registry.METHODS))
def test_initial_state_leaves_own_their_buffers(name):
  # The trainer donates the whole state: two leaves on one buffer fail at the first step.
  leaves = jax.tree.leaves(optim_method(name).init(None))
  pointers = [leaf.unsafe_buffer_pointer() for leaf in leaves]
  assert len(set(pointers)) == len(pointers)


def test_same_seed_same_update_bit_for_bit():
  # A stateful, randomised method run twice from a fresh state with the same keys:
  # nothing but the inputs decides the result (no hidden key, no global state).
  matrices = [jacobian(3, case) for case in CASES]
  for name in ("gradvac", "nash_mtl"):
    first, _ = run_method(optim_method(name), matrices, key=(name, 3))
    second, _ = run_method(optim_method(name), matrices, key=(name, 3))
    for a, b in zip(first, second):
      np.testing.assert_array_equal(a, b)


def test_sharded_gradients_are_not_gathered():
  # As for PCGrad: with leaves sharded along a parameter axis, G is a local
  # contraction plus an all-reduce of T*T scalars, and the QP runs on G alone.
  mesh = Mesh(np.array(jax.devices()[:8]), ("model",))
  rng = np.random.default_rng(0)
  grads = {"kernel": jnp.asarray(rng.normal(size=(3, 16, 8)), jnp.float32)}
  sharded = {"kernel": jax.device_put(grads["kernel"], NamedSharding(mesh, PartitionSpec(None, "model")))}
  tx = dual_cone.upgrad(3)
  combine = jax.jit(lambda g, s: tx.update(g, s)[0])
  hlo = combine.lower(sharded, tx.init(None)).compile().as_text()
  assert "all-reduce" in hlo and "all-gather" not in hlo
  expected = tjd.UPGrad()(torch.tensor(np.asarray(grads["kernel"], np.float64).reshape(3, -1))).numpy()
  np.testing.assert_allclose(np.asarray(combine(sharded, tx.init(None))["kernel"]).ravel(), expected, atol=2e-5)
