"""PCGrad, kept at its old import path: it now lives on the Gram-matrix engine in `train/conflicts/`.

`train.pcgrad.pcgrad`, `pcgrad_combine`, `gram_matrix`, `task_orders`,
`surgery_coefficients`, `gradient_diagnostics`, `PCGradState` and
`find_pcgrad_state` are the same objects as in `train.conflicts.pcgrad` and
`train.conflicts.engine`; see those modules for the algorithm and why it runs
on the Gram matrix.
"""

from train.conflicts.engine import gradient_diagnostics, gram_matrix
from train.conflicts.engine import weighted_task_sum as _weighted_task_sum
from train.conflicts.pcgrad import (PCGradDiagnostics, PCGradState, find_pcgrad_state, pcgrad,
                                    pcgrad_combine, surgery_coefficients, task_orders)

__all__ = ["PCGradDiagnostics", "PCGradState", "find_pcgrad_state", "gradient_diagnostics",
           "gram_matrix", "pcgrad", "pcgrad_combine", "surgery_coefficients", "task_orders",
           "_weighted_task_sum"]
