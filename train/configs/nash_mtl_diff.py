"""pcgrad_diff with nash_mtl in place of PCGrad: diff pair heads, round-robin, per-task gradients.

  python -m train.main --config=train/configs/nash_mtl_diff.py --workdir=workdirs/nash_mtl_diff

The method and its options: train/conflicts/registry.py (config.conflicts.nash_mtl).
"""

from train.configs import pcgrad_diff


def get_config():
  config = pcgrad_diff.get_config()
  config.name = "nash_mtl_diff"
  config.pcgrad.enabled = False
  config.conflicts.method = "nash_mtl"
  return config
