"""BERT hyper-parameters, read from (and written back to) a Hugging Face `config.json`.

The dataclass is frozen so a config can be a static argument of a jitted
function and a field of a Linen module.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

# Activations accepted by Hugging Face BERT configs that we implement.
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_python", "relu")


class ConfigError(ValueError):
  """A `config.json` that does not describe a BERT encoder we can build."""


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Shape and regularisation of a BERT encoder, with Hugging Face field names."""

  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise ConfigError(
          f"hidden_size={self.hidden_size} is not divisible by "
          f"num_attention_heads={self.num_attention_heads}")
    if self.hidden_act not in SUPPORTED_ACTIVATIONS:
      raise ConfigError(f"hidden_act={self.hidden_act!r} is not one of {SUPPORTED_ACTIVATIONS}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @classmethod
  def from_dict(cls, values: dict[str, Any], source: str = "<dict>") -> "BertConfig":
    """Builds a config from HF `config.json` contents, ignoring fields BERT does not use."""
    model_type = values.get("model_type", "bert")
    if model_type != "bert":
      raise ConfigError(f"{source}: model_type is {model_type!r}; bert_jax only builds 'bert' encoders")
    names = {f.name for f in dataclasses.fields(cls)}
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                "intermediate_size")
    missing = [k for k in required if k not in values]
    if missing:
      raise ConfigError(f"{source}: missing BERT config fields {missing}")
    position_type = values.get("position_embedding_type", "absolute")
    if position_type != "absolute":
      raise ConfigError(f"{source}: position_embedding_type={position_type!r}; only 'absolute' is supported")
    try:
      return cls(**{k: v for k, v in values.items() if k in names})
    except ConfigError as e:
      raise ConfigError(f"{source}: {e}") from None

  @classmethod
  def from_json_file(cls, path: str | os.PathLike) -> "BertConfig":
    path = os.fspath(path)
    try:
      with open(path, encoding="utf-8") as f:
        values = json.load(f)
    except FileNotFoundError:
      raise FileNotFoundError(f"no config.json at {path}") from None
    except json.JSONDecodeError as e:
      raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(values, dict):
      raise ConfigError(f"{path}: expected a JSON object, got {type(values).__name__}")
    return cls.from_dict(values, source=path)

  def to_hf_dict(self) -> dict[str, Any]:
    """The `config.json` contents that `transformers.BertModel.from_pretrained` reads."""
    values = dataclasses.asdict(self)
    values.update(model_type="bert", architectures=["BertModel"],
                  position_embedding_type="absolute", initializer_range=0.02)
    return values

  @classmethod
  def tiny(cls, **overrides) -> "BertConfig":
    """A 2-layer, 32-wide encoder for unit tests: compiles in seconds on a CPU."""
    values = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.1,
                  attention_probs_dropout_prob=0.1)
    values.update(overrides)
    return cls(**values)
