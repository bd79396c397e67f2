"""Round-robin with annealed task proportions: from data size at the first epoch towards balanced.

Each task's share of a step is proportional to N_t ** alpha, alpha going linearly
from 1.0 at the first epoch to 0.5 at the last (Stickland & Murray 2019), so Quora
dominates early and SST/STS get relatively more steps later (data_prep/sampler.py).
With one epoch alpha stays 1.0 and this is the default preset.

  python -m train.main --config=train/configs/annealed.py --workdir=workdirs/annealed
"""

from train.configs import base


def get_config():
  config = base.get_config()
  config.name = "annealed"
  config.proportions = "annealed"
  return config
