"""Round-robin: every step takes a batch of each task; per-task batch sizes proportional to data size.

The baseline's heads ([CLS], concat), so the difference from baseline_sequential.py
is the task schedule alone.

  python -m train.main --config=train/configs/round_robin.py --workdir=workdirs/round_robin
"""

from train.configs import base


def get_config():
  config = base.get_config()
  config.name = "round_robin"
  config.task_schedule = "round_robin"
  config.proportions = "size"
  config.model.pair_pooling = "cls"
  config.model.paraphrase_head = "concat"
  config.model.similarity_head = "concat"
  return config
