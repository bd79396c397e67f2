"""bert_jax: BERT in JAX/Flax, multitask heads, checkpoints, and trained-model bundles.

`bert_jax.load_model(path)` loads what a training run leaves in `<workdir>/model/`
(see `bert_jax.bundle`). It is imported on first call, so `import bert_jax.tokenizer`
and the other submodules stay as light as they are on their own.
"""

from __future__ import annotations

import os


def load_model(path: str | os.PathLike, **kwargs):
  """The trained multitask model of a bundle directory, or of a workdir holding one in `model/`.

  Returns a `bert_jax.bundle.TrainedModel`: `predict_sst`, `sst_probabilities`,
  `paraphrase` (probabilities), `predict_paraphrase` (0/1) and `similarity` (0..5).
  Keyword arguments go to `bert_jax.bundle.load_model` (e.g. batch_size).
  """
  from bert_jax import bundle  # pylint: disable=import-outside-toplevel
  return bundle.load_model(path, **kwargs)
