"""PCGrad applied to the STS gradient only, as one report proposed; diff pair heads.

  python -m train.main --config=train/configs/pcgrad_sts_only.py --workdir=workdirs/pcgrad_sts_only
"""

from train.configs import pcgrad_diff


def get_config():
  config = pcgrad_diff.get_config()
  config.name = "pcgrad_sts_only"
  config.pcgrad.tasks = ("sts",)
  return config
