"""The blocked training engine: block layout (:mod:`~dmf.engine.layout`), the block-building
stage (:mod:`~dmf.engine.blocks`), per-block solves (:mod:`~dmf.engine.solve`), the epoch loop
(:mod:`~dmf.engine.trainer`) and the NumPy and compiled kernels (:mod:`~dmf.engine.kernels`,
:mod:`~dmf.engine._compiled`)."""
