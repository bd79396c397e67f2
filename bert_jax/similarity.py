r"""Cosine similarity of sentence embeddings from a pretrained BERT checkpoint.

Sentence embeddings are the mean of the last hidden states over real tokens,
the pooling all-MiniLM-L6-v2 (the default checkpoint) was trained with, so the
scores match what sentence-transformers reports for that model.

  python -m bert_jax.similarity "A man plays a guitar." "Someone is playing guitar."
  python -m bert_jax.similarity --checkpoint=/path/to/bert-dir "a" "b" "c" "d"  # pairs (a,b), (c,d)
  python -m bert_jax.similarity  # built-in example pairs
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from bert_jax.checkpoints import DEFAULT_CHECKPOINT, LoadedCheckpoint, load_hf_checkpoint
from bert_jax.modeling import BertModel, mean_pool

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", DEFAULT_CHECKPOINT, "'minilm-l6', a Hugging Face BERT directory, or a hub id.")
_MAX_LENGTH = flags.DEFINE_integer("max_length", 256, "Longer sentences are truncated to this many tokens.")

EXAMPLE_PAIRS = (
    ("A man is playing a guitar.", "A person plays the guitar."),
    ("How do I learn to cook quickly?", "What is the fastest way to become a good cook?"),
    ("The cat sleeps on the warm windowsill.", "Stock markets fell sharply on Monday."),
)


def sentence_embeddings(checkpoint: LoadedCheckpoint, sentences: Sequence[str],
                        max_length: int = 256) -> np.ndarray:
  """Unit-length mean-pooled embeddings, float32 [len(sentences), hidden]."""
  max_length = min(max_length, checkpoint.config.max_position_embeddings)
  batch = checkpoint.tokenizer(sentences, max_length=max_length)
  model = BertModel(checkpoint.config, add_pooling_layer=False)

  @jax.jit
  def embed(params, input_ids, attention_mask, token_type_ids):
    hidden = model.apply({"params": params}, input_ids, attention_mask, token_type_ids).last_hidden_state
    pooled = mean_pool(hidden, attention_mask)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)

  # The pooler is unused for mean pooling; a model without it takes the tree without it.
  params = {k: v for k, v in checkpoint.params.items() if k != "pooler"}
  return np.asarray(embed(params, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]))


def cosine_similarities(checkpoint: LoadedCheckpoint, pairs: Sequence[tuple[str, str]],
                        max_length: int = 256) -> np.ndarray:
  """Cosine similarity of each (a, b) pair, float32 [len(pairs)]; one model call for all."""
  embeddings = sentence_embeddings(checkpoint, [s for pair in pairs for s in pair], max_length)
  return np.sum(embeddings[0::2] * embeddings[1::2], axis=-1)


def main(argv: Sequence[str]) -> None:
  sentences = argv[1:]
  if len(sentences) % 2:
    raise app.UsageError(f"pass sentences in pairs (a b [c d ...]); got {len(sentences)} sentences")
  pairs = list(zip(sentences[0::2], sentences[1::2])) or list(EXAMPLE_PAIRS)
  checkpoint = load_hf_checkpoint(_CHECKPOINT.value)
  for (a, b), score in zip(pairs, cosine_similarities(checkpoint, pairs, _MAX_LENGTH.value)):
    print(f"{score:+.4f}  {a!r} <-> {b!r}")


if __name__ == "__main__":
  app.run(main)
