"""pcgrad_diff with uncertainty in place of PCGrad: diff pair heads, round-robin, per-task gradients.

  python -m train.main --config=train/configs/uncertainty_diff.py --workdir=workdirs/uncertainty_diff

The method and its options: train/conflicts/registry.py (config.conflicts.uncertainty).
"""

from train.configs import pcgrad_diff


def get_config():
  config = pcgrad_diff.get_config()
  config.name = "uncertainty_diff"
  config.pcgrad.enabled = False
  config.conflicts.method = "uncertainty"
  return config
