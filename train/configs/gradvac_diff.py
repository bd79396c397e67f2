"""pcgrad_diff with gradvac in place of PCGrad: diff pair heads, round-robin, per-task gradients.

  python -m train.main --config=train/configs/gradvac_diff.py --workdir=workdirs/gradvac_diff

The method and its options: train/conflicts/registry.py (config.conflicts.gradvac).
"""

from train.configs import pcgrad_diff


def get_config():
  config = pcgrad_diff.get_config()
  config.name = "gradvac_diff"
  config.pcgrad.enabled = False
  config.conflicts.method = "gradvac"
  return config
