"""pcgrad_diff with cagrad in place of PCGrad: diff pair heads, round-robin, per-task gradients.

  python -m train.main --config=train/configs/cagrad_diff.py --workdir=workdirs/cagrad_diff

The method and its options: train/conflicts/registry.py (config.conflicts.cagrad).
"""

from train.configs import pcgrad_diff


def get_config():
  config = pcgrad_diff.get_config()
  config.name = "cagrad_diff"
  config.pcgrad.enabled = False
  config.conflicts.method = "cagrad"
  return config
