"""diff pair heads plus the extra data, without PCGrad: CFIMDB (polar: 0/4) for SST, SICK for STS.

Report 1's "Diff + additional data" row; with pcgrad_diff_extra_data.py it separates
what the extra data does from what gradient surgery does.

  python -m train.main --config=train/configs/diff_extra_data.py --workdir=workdirs/diff_extra_data
"""

from train.configs import diff


def get_config():
  config = diff.get_config()
  config.name = "diff_extra_data"
  config.data.extra_sst = "cfimdb_polar"
  config.data.extra_sts = "sick"
  return config
