"""Cross-encoder pair heads: one joint [CLS] a [SEP] b [SEP] sequence, linear on [CLS].

The standard BERT recipe for sentence pairs; neither report tried it. Attention
across the two sentences costs one longer sequence instead of two short ones.

  python -m train.main --config=train/configs/cross.py --workdir=workdirs/cross
"""

from train.configs import base


def get_config():
  config = base.get_config()
  config.name = "cross"
  config.model.paraphrase_head = "cross"
  config.model.similarity_head = "cross"
  return config
