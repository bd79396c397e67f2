"""The diff pair heads: linear on [u; v; |u-v|; u*v], the reports' best single change.

  python -m train.main --config=train/configs/diff.py --workdir=workdirs/diff
"""

from train.configs import base


def get_config():
  config = base.get_config()
  config.name = "diff"
  config.model.paraphrase_head = "diff"
  config.model.similarity_head = "diff"
  return config
