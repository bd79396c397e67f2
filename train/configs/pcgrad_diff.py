"""PCGrad (gradient surgery) over the three tasks' gradients, with diff pair heads.

Each step computes one gradient per task and projects away conflicting
components (Yu et al. 2020) before AdamW. Logs the pairwise gradient cosines.

  python -m train.main --config=train/configs/pcgrad_diff.py --workdir=workdirs/pcgrad_diff
"""

from train.configs import base


def get_config():
  config = base.get_config()
  config.name = "pcgrad_diff"
  config.model.paraphrase_head = "diff"
  config.model.similarity_head = "diff"
  config.task_schedule = "round_robin"
  config.pcgrad.enabled = True
  return config
