"""The name of one split of one prepared TFDS dataset: `cs224n_sst:train`, `cfimdb/polar:train`.

It lives alone, with no imports of its own, because both ends of the data
path name splits with it: `catalog` (which loads TFDS) finds and prepares the
split's builder, and `tokenized` (which must import without TFDS) keys its
token cache by it. Neither has to import the other for the name.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TfdsSplit:
  """One TFDS split that feeds a task: its builder, split, and config (for builders with several)."""
  builder: str
  split: str
  config: str | None = None

  @classmethod
  def parse(cls, text: str) -> "TfdsSplit":
    """`builder[/config]:split` -> TfdsSplit."""
    name, sep, split = text.partition(":")
    if not sep or not split:
      raise ValueError(f"TFDS split {text!r} is not of the form 'builder[/config]:split'")
    builder, _, config = name.partition("/")
    return cls(builder=builder, split=split, config=config or None)

  def __str__(self) -> str:
    config = f"/{self.config}" if self.config else ""
    return f"{self.builder}{config}:{self.split}"
