"""Data parallelism over the devices: `jit` of a `shard_map` over a one-axis mesh, or `pmap`.

Both map the very same per-device function: it sees one device's slice of the
batch and the whole of everything else, and it reduces across the `data` axis
itself (`psum` of the gradients). The two modes differ only in where the arrays
live and how the batch is laid out:

  jit   global arrays: the batch is [B, ...], split along a `data` mesh axis, and
        the state is replicated over the mesh. Multi-host runs use this mode:
        each process contributes its rows of the global batch.
  pmap  host-local arrays: the batch is [devices, B / devices, ...]; the state is
        replicated over this host's devices as under jit.

In both, the replicated state is one array per leaf (no stacked per-device
copies to take apart), and everything the step returns is replicated, so the
trainer reads it the same way whatever the mode.

The batch splits into one group per device, `num_devices` of them: packed
batches are packed per group (`train/data.py: TaskData.packing_spec`), so each
device's rows hold exactly its examples.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
MODES = ("jit", "pmap")  # config.parallel.mode
BATCH = P(DATA_AXIS)  # split along its leading axis, one slice per device
REPLICATED = P()  # the whole array on every device


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


def sum_over_devices(tree: Any) -> Any:
  """`jax.lax.psum` over `DATA_AXIS`, inside a function that `DataParallel.compile` maps.

  On one device the sum is the identity and is left out: XLA keeps even a
  one-participant all-reduce, which on one device would only copy every leaf
  of the gradient.
  """
  if jax.lax.axis_size(DATA_AXIS) == 1:
    return tree
  return jax.lax.psum(tree, DATA_AXIS)


def _is_spec(x) -> bool:
  return isinstance(x, P)


@dataclasses.dataclass
class DataParallel:
  """Places state and batches on devices and maps per-device functions over them, for one mode."""
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
  def num_devices(self) -> int:
    """How many slices a batch is split into: every batch size must be a multiple of it."""
    return len(self.devices)

  @property
  def mesh(self) -> Mesh:
    return Mesh(np.asarray(self.devices), (DATA_AXIS,))

  @property
  def has_host_local_state(self) -> bool:
    """True when each process holds its own replica of the state (pmap over several processes).

    pmap maps over a process's own devices, so its replicated state spans no other
    process: Orbax cannot save it as a global array (train/checkpointing.py).
    """
    return self.mode == "pmap" and jax.process_count() > 1

  def replicate(self, tree: Any) -> Any:
    """`tree` (the train state, or params) on every device, as the mapped functions take it."""
    return jax.device_put(tree, NamedSharding(self.mesh, REPLICATED))

  def put_batch(self, batch: Any) -> Any:
    """Sends this process's rows of a global batch to its devices, split along the leading axis.

    Every process iterates the same deterministic global batches; in a multi-host
    job each keeps only its contiguous slice of rows, so together they feed the
    global batch once.
    """
    if jax.process_count() > 1:
      batch = jax.tree.map(
          lambda x: np.array_split(x, jax.process_count())[jax.process_index()], batch)
    local_devices = len([d for d in self.devices if d.process_index == jax.process_index()])
    def check(x):
      if x.shape[0] % local_devices:
        raise ValueError(f"batch of {x.shape[0]} rows does not split over {local_devices} devices")
      return x
    batch = jax.tree.map(check, batch)
    sharding = NamedSharding(self.mesh, BATCH)
    if self.mode == "pmap":  # [B, ...] -> [devices, B / devices, ...], one slice per device
      return jax.device_put(jax.tree.map(
          lambda x: x.reshape((local_devices, x.shape[0] // local_devices) + x.shape[1:]), batch), sharding)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

  def compile(self, per_device: Callable, *, in_specs: tuple, out_specs: Any = REPLICATED,
              donate_argnums: tuple[int, ...] = ()) -> Callable:
    """`per_device` mapped over the devices, compiled; it reduces across `DATA_AXIS` itself.

    Args:
      per_device: the function one device runs, on its slice of each `BATCH` argument.
      in_specs: one per positional argument (or a prefix tree of it): `BATCH` for what
        `put_batch` placed, `REPLICATED` for the rest (state, params, gradients, keys).
      out_specs: the same for the outputs: `REPLICATED` for what every device computes
        alike (after its psum), `BATCH` for per-example outputs, concatenated in batch order.
      donate_argnums: arguments whose buffers the outputs may reuse (the state).

    `check_vma=False`, as `jax.pmap` itself runs its body: the function writes its own
    collectives, so the same function means the same in both modes. Under pmap a
    function without a `BATCH` argument (the optimizer step: state and gradients are
    replicated) leaves pmap nothing to map; it runs as jit of shard_map over the same
    devices, which is what `jax.pmap` compiles to anyway (jax/_src/pmap.py).
    """
    takes_batch = any(spec == BATCH for spec in jax.tree.leaves(in_specs, is_leaf=_is_spec))
    if self.mode == "pmap" and takes_batch:
      axes = lambda specs: jax.tree.map(lambda spec: 0 if spec == BATCH else None, specs, is_leaf=_is_spec)
      return jax.pmap(per_device, axis_name=DATA_AXIS, in_axes=axes(in_specs), out_axes=axes(out_specs),
                      donate_argnums=donate_argnums)
    mapped = jax.shard_map(per_device, mesh=self.mesh, in_specs=in_specs, out_specs=out_specs,
                           check_vma=False)
    return jax.jit(mapped, donate_argnums=donate_argnums)

  def compile_predict_step(self, predict_step: Callable) -> Callable:
    """`(params, batch) -> per-example outputs` mapped over the devices."""
    return self.compile(predict_step, in_specs=(REPLICATED, BATCH), out_specs=BATCH)

  def gather(self, outputs: Any) -> Any:
    """Host numpy of per-example outputs, in batch order.

    With several processes each holds the outputs of its own rows (jit: its shards of
    a global array; pmap: its devices' slices), and every process gets all of them:
    `put_batch` gave process i the i-th contiguous block of rows, so concatenating
    the blocks in process order is batch order in both modes.
    """
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      outputs = multihost_utils.process_allgather(outputs, tiled=True)
    outputs = jax.device_get(outputs)
    if self.mode == "pmap":
      return jax.tree.map(lambda x: x.reshape((-1,) + x.shape[2:]), outputs)
    return outputs
