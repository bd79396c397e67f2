"""pcgrad_diff with dualproj in place of PCGrad: diff pair heads, round-robin, per-task gradients.

  python -m train.main --config=train/configs/dualproj_diff.py --workdir=workdirs/dualproj_diff

The method and its options: train/conflicts/registry.py (config.conflicts.dualproj).
"""

from train.configs import pcgrad_diff


def get_config():
  config = pcgrad_diff.get_config()
  config.name = "dualproj_diff"
  config.pcgrad.enabled = False
  config.conflicts.method = "dualproj"
  return config
