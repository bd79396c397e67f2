"""Cosine pair heads: cosine(u, v) scaled to the label range for both pair tasks.

  python -m train.main --config=train/configs/cosine.py --workdir=workdirs/cosine
"""

from train.configs import base


def get_config():
  config = base.get_config()
  config.name = "cosine"
  config.model.paraphrase_head = "cosine"
  config.model.similarity_head = "cosine"
  return config
