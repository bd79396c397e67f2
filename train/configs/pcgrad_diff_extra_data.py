"""pcgrad_diff plus the extra data: CFIMDB (polar: 0/4) for SST and SICK for STS.

  python -m train.main --config=train/configs/pcgrad_diff_extra_data.py --workdir=workdirs/pcgrad_diff_extra_data
"""

from train.configs import default


def get_config():
  config = default.get_config()
  config.name = "pcgrad_diff_extra_data"
  config.model.paraphrase_head = "diff"
  config.model.similarity_head = "diff"
  config.schedule = "round_robin"
  config.pcgrad.enabled = True
  config.data.extra_sst = "cfimdb_polar"
  config.data.extra_sts = "sick"
  return config
