"""pcgrad_diff with aligned_mtl in place of PCGrad: diff pair heads, round-robin, per-task gradients.

  python -m train.main --config=train/configs/aligned_mtl_diff.py --workdir=workdirs/aligned_mtl_diff

The method and its options: train/conflicts/registry.py (config.conflicts.aligned_mtl).
"""

from train.configs import pcgrad_diff


def get_config():
  config = pcgrad_diff.get_config()
  config.name = "aligned_mtl_diff"
  config.pcgrad.enabled = False
  config.conflicts.method = "aligned_mtl"
  return config
