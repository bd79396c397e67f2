"""Round-robin with balanced proportions: every task gets the same share of each step.

Smaller tasks (STS) cycle through their data more often than Quora.

  python -m train.main --config=train/configs/round_robin_balanced.py --workdir=workdirs/round_robin_balanced
"""

from train.configs import round_robin


def get_config():
  config = round_robin.get_config()
  config.name = "round_robin_balanced"
  config.proportions = "balanced"
  return config
