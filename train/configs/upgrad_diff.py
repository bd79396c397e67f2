"""pcgrad_diff with upgrad in place of PCGrad: diff pair heads, round-robin, per-task gradients.

  python -m train.main --config=train/configs/upgrad_diff.py --workdir=workdirs/upgrad_diff

The method and its options: train/conflicts/registry.py (config.conflicts.upgrad).
"""

from train.configs import pcgrad_diff


def get_config():
  config = pcgrad_diff.get_config()
  config.name = "upgrad_diff"
  config.pcgrad.enabled = False
  config.conflicts.method = "upgrad"
  return config
