"""pcgrad_diff plus the extra data: CFIMDB (polar: 0/4) for SST and SICK for STS.

  python -m train.main --config=train/configs/pcgrad_diff_extra_data.py --workdir=workdirs/pcgrad_diff_extra_data
"""

from train.configs import pcgrad_diff


def get_config():
  config = pcgrad_diff.get_config()
  config.name = "pcgrad_diff_extra_data"
  config.data.extra_sst = "cfimdb_polar"
  config.data.extra_sts = "sick"
  return config
