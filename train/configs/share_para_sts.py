"""PARA/STS layer sharing: both pair tasks share the first dense layer of a diff_2dense head.

The two pair tasks measure related things (paraphrase vs graded similarity), so
sharing the first head layer lets each task's data train the other's features.

  python -m train.main --config=train/configs/share_para_sts.py --workdir=workdirs/share_para_sts
"""

from train.configs import base


def get_config():
  config = base.get_config()
  config.name = "share_para_sts"
  config.model.paraphrase_head = "diff_2dense"
  config.model.similarity_head = "diff_2dense"
  config.model.share_para_sts = True
  return config
