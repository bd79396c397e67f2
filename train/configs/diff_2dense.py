"""diff features through two dense layers (dense, gelu, dropout, dense).

  python -m train.main --config=train/configs/diff_2dense.py --workdir=workdirs/diff_2dense
"""

from train.configs import base


def get_config():
  config = base.get_config()
  config.name = "diff_2dense"
  config.model.paraphrase_head = "diff_2dense"
  config.model.similarity_head = "diff_2dense"
  return config
