"""The minBERT baseline as both reports started from: the pooled [CLS] for every task.

baseline_sequential.py pools [CLS] for the pair tasks only and keeps mean pooling
for SST (what all-MiniLM-L6-v2 was trained with); here SST reads BERT's pooled
output, tanh(dense([CLS])), too, as the course's starter code does.

  python -m train.main --config=train/configs/baseline_cls.py --workdir=workdirs/baseline_cls
"""

from train.configs import baseline_sequential


def get_config():
  config = baseline_sequential.get_config()
  config.name = "baseline_cls"
  config.model.sentiment_pooling = "cls"
  return config
