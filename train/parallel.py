"""Data parallelism over every local device: `jit` over a one-axis mesh, or `pmap`.

Both wrap the same step body from `steps.py`. With `jit` the arrays are global:
the batch is sharded along a `data` mesh axis, the state replicated, and XLA
inserts the gradient all-reduce (this is also what multi-host runs use, since
each host contributes only its local rows). With `pmap` the step sees one
device's shard and averages gradients with `pmean` itself.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
MODES = ("jit", "pmap")  # config.parallel.mode


def maybe_initialize_distributed() -> None:
  """Joins a multi-host job when the environment describes one (TPU pod, SLURM, coordinator env)."""
  markers = ("JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES",
             "MEGASCALE_COORDINATOR_ADDRESS")
  slurm_multi = int(os.environ.get("SLURM_NTASKS", "1")) > 1
  ompi_multi = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
  workers = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  multi_tpu = "," in workers
  if any(os.environ.get(m) for m in markers if m != "TPU_WORKER_HOSTNAMES") or multi_tpu \
      or slurm_multi or ompi_multi:
    if not jax.distributed.is_initialized():
      jax.distributed.initialize()
      logging.info("jax.distributed: process %d of %d", jax.process_index(), jax.process_count())


@dataclasses.dataclass
class DataParallel:
  """Places state and batches on devices and compiles the step for one mode."""
  mode: str  # "jit" or "pmap"
  devices: list

  @classmethod
  def create(cls, mode: str = "jit", num_devices: int = 0) -> "DataParallel":
    if mode not in MODES:
      raise ValueError(f"parallel mode must be one of {MODES}, got {mode!r}")
    devices = jax.local_devices() if mode == "pmap" else jax.devices()
    if num_devices:
      if num_devices > len(devices):
        raise ValueError(f"asked for {num_devices} devices but only {len(devices)} are visible")
      devices = devices[:num_devices]
    return cls(mode, devices)

  @property
  def num_local_devices(self) -> int:
    return len([d for d in self.devices if d.process_index == jax.process_index()])

  @property
  def mesh(self) -> Mesh:
    return Mesh(np.asarray(self.devices), (DATA_AXIS,))

  def replicate(self, tree: Any) -> Any:
    if self.mode == "pmap":
      # pmap takes one copy per device stacked on a leading axis (what the deprecated
      # jax.device_put_replicated built), placed copy-by-copy without staging all on one device.
      sharding = NamedSharding(self.mesh, P(DATA_AXIS))
      return jax.tree.map(lambda x: jax.make_array_from_single_device_arrays(
          (len(self.devices),) + np.shape(x), sharding,
          [jax.device_put(jnp.asarray(x)[None], d) for d in self.devices]), tree)
    return jax.device_put(tree, NamedSharding(self.mesh, P()))

  def unreplicate(self, tree: Any) -> Any:
    """A single copy of a replicated tree (on device; `jax.device_get` it to read it)."""
    if self.mode == "pmap":
      return jax.tree.map(lambda x: x[0], tree)
    return tree

  def put_batch(self, batch: Any) -> Any:
    """Sends this process's rows of a global batch to its devices, split along the leading axis.

    Every process iterates the same deterministic global batches; in a multi-host
    job each keeps only its contiguous slice of rows, so together they feed the
    global batch once.
    """
    if jax.process_count() > 1:
      batch = jax.tree.map(
          lambda x: np.array_split(x, jax.process_count())[jax.process_index()], batch)
    n = self.num_local_devices
    def check(x):
      if x.shape[0] % n:
        raise ValueError(f"batch of {x.shape[0]} rows does not split over {n} devices")
      return x
    batch = jax.tree.map(check, batch)
    sharding = NamedSharding(self.mesh, P(DATA_AXIS))
    if self.mode == "pmap":  # [B, ...] -> [devices, B / devices, ...], one slice per device
      return jax.device_put(jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), batch),
                            sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

  def compile(self, make_body: Callable[[str | None], Callable], donate_argnums=()) -> Callable:
    """Compiles `make_body(axis_name)` for this mode; its last argument is the rng.

    Under pmap every argument but the rng is per-device (replicated state, sharded
    batch) and the rng is broadcast; the body reduces across `axis_name` itself.
    Under jit the body sees global arrays (axis_name None) and its outputs are
    replicated.
    """
    if self.mode == "pmap":
      body = make_body(DATA_AXIS)
      num_args = len(inspect.signature(body).parameters)
      return jax.pmap(body, axis_name=DATA_AXIS, in_axes=(0,) * (num_args - 1) + (None,),
                      donate_argnums=donate_argnums)
    replicated = NamedSharding(self.mesh, P())
    return jax.jit(make_body(None), donate_argnums=donate_argnums, out_shardings=replicated)

  def compile_predict_step(self, predict_step: Callable) -> Callable:
    if self.mode == "pmap":
      return jax.pmap(predict_step, axis_name=DATA_AXIS)
    return jax.jit(predict_step)

  def gather(self, outputs: Any) -> Any:
    """Host numpy of per-example outputs, in batch order."""
    if jax.process_count() > 1 and self.mode == "jit":
      from jax.experimental import multihost_utils
      outputs = multihost_utils.process_allgather(outputs, tiled=True)
    outputs = jax.device_get(outputs)
    if self.mode == "pmap":
      return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), outputs)
    return outputs
