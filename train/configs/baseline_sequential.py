"""The reports' baseline: [CLS] pooling, concat pair heads, tasks trained one after another.

Each epoch trains SST, then Para, then STS, each on its own epoch of data. The
reports found this forgets the earlier tasks; compare with round_robin.py.

  python -m train.main --config=train/configs/baseline_sequential.py --workdir=workdirs/baseline_sequential
"""

from train.configs import base


def get_config():
  config = base.get_config()
  config.name = "baseline_sequential"
  config.task_schedule = "sequential"
  config.model.pair_pooling = "cls"
  config.model.paraphrase_head = "concat"
  config.model.similarity_head = "concat"
  config.batch_size = 32  # per task step in the sequential task schedule
  return config
