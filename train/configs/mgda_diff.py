"""pcgrad_diff with mgda in place of PCGrad: diff pair heads, round-robin, per-task gradients.

  python -m train.main --config=train/configs/mgda_diff.py --workdir=workdirs/mgda_diff

The method and its options: train/conflicts/registry.py (config.conflicts.mgda).
"""

from train.configs import pcgrad_diff


def get_config():
  config = pcgrad_diff.get_config()
  config.name = "mgda_diff"
  config.pcgrad.enabled = False
  config.conflicts.method = "mgda"
  return config
