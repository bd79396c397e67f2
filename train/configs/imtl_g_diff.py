"""pcgrad_diff with imtl_g in place of PCGrad: diff pair heads, round-robin, per-task gradients.

  python -m train.main --config=train/configs/imtl_g_diff.py --workdir=workdirs/imtl_g_diff

The method and its options: train/conflicts/registry.py (config.conflicts.imtl_g).
"""

from train.configs import pcgrad_diff


def get_config():
  config = pcgrad_diff.get_config()
  config.name = "imtl_g_diff"
  config.pcgrad.enabled = False
  config.conflicts.method = "imtl_g"
  return config
