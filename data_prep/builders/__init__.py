"""TFDS builders for the bert_jax datasets; importing this package registers them.

After `import data_prep.builders`, `tfds.builder("cs224n_sst", data_dir=...)`
and `tfds.data_source(...)` find them by name. Names: cs224n_sst, cs224n_quora,
cs224n_sts, cfimdb, sick.
"""

from data_prep.builders.cfimdb import Cfimdb
from data_prep.builders.cs224n_quora import Cs224nQuora
from data_prep.builders.cs224n_sst import Cs224nSst
from data_prep.builders.cs224n_sts import Cs224nSts
from data_prep.builders.sick import Sick

BUILDERS = {cls.name: cls for cls in (Cs224nSst, Cs224nQuora, Cs224nSts, Cfimdb, Sick)}
