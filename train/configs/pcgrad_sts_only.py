"""PCGrad applied to the STS gradient only, as one report proposed; diff pair heads.

  python -m train.main --config=train/configs/pcgrad_sts_only.py --workdir=workdirs/pcgrad_sts_only
"""

from train.configs import default


def get_config():
  config = default.get_config()
  config.name = "pcgrad_sts_only"
  config.model.paraphrase_head = "diff"
  config.model.similarity_head = "diff"
  config.schedule = "round_robin"
  config.pcgrad.enabled = True
  config.pcgrad.tasks = ("sts",)
  return config
