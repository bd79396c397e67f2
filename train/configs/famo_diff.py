"""pcgrad_diff with famo in place of PCGrad: diff pair heads, round-robin, per-task gradients.

  python -m train.main --config=train/configs/famo_diff.py --workdir=workdirs/famo_diff

The method and its options: train/conflicts/registry.py (config.conflicts.famo).
"""

from train.configs import pcgrad_diff


def get_config():
  config = pcgrad_diff.get_config()
  config.name = "famo_diff"
  config.pcgrad.enabled = False
  config.conflicts.method = "famo"
  return config
