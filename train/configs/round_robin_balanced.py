"""Round-robin with balanced proportions: every task gets the same share of each step.

Smaller tasks (STS) cycle through their data more often than Quora.

  python -m train.main --config=train/configs/round_robin_balanced.py --workdir=workdirs/round_robin_balanced
"""

from train.configs import default


def get_config():
  config = default.get_config()
  config.name = "round_robin_balanced"
  config.schedule = "round_robin"
  config.proportions = "balanced"
  config.model.pair_pooling = "cls"
  config.model.paraphrase_head = "concat"
  config.model.similarity_head = "concat"
  return config
