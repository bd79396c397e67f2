"""Less paraphrase training: a quarter of the Quora pairs per epoch, the rest of the default recipe.

Quora is the largest task, and report 2 cut its training down so that SST and STS
were not crowded out. `config.data.para_fraction` scales how many Quora pairs an epoch
holds (its share of each round-robin step and the epoch length); the next epoch goes on
with pairs the last one did not reach. 0 trains no paraphrase at all.

  python -m train.main --config=train/configs/less_para.py --workdir=workdirs/less_para
  python -m train.main --config=train/configs/less_para.py --config.data.para_fraction=0.5
"""

from train.configs import base


def get_config():
  config = base.get_config()
  config.name = "less_para"
  config.data.para_fraction = 0.25
  return config
