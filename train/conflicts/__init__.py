"""Multitask gradient-conflict methods as optax transformations on one Gram-matrix engine.

`engine.py` turns stacked per-task gradients into G, a method turns G (and its
state) into task weights, the engine returns sum_t w_t g_t. `registry.py` maps
`config.conflicts.method` to a method and its options. One module per method
or family: pcgrad, gradvac, mgda, cagrad, imtl_g, nash_mtl, aligned_mtl,
dual_cone (UPGrad, DualProj), loss_weighting (uncertainty, DWA, FAMO).
"""
