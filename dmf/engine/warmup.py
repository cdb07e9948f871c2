"""Compile dmf's kernels once per installation, not once per worker process.

numba compiles a kernel the first time a process calls it and caches the machine code on
disk beside the package. Without care, every worker of a fresh installation compiles the
same kernels at the same moment (each one for several seconds, all competing for the
cores). :func:`compile_once` lets one worker compile what a fit uses, on a tiny block, before
the fit's tasks start; the others then load the cached code (when they share the
installation's filesystem, as a LocalCluster's do; otherwise each compiles its own, as
before).
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

#: Schedulers whose workers were found compiled (checked once per client process).
_CHECKED: set[str] = set()


def compile_kernels(objective) -> None:
    """Build a two-row block and solve it with ``objective``: the block build's and the solve's
    kernels compile (or load from numba's cache) with the signatures a fit uses."""
    from dmf.engine._compiled import rating_scores
    from dmf.engine.blocks import assemble_block, split_rows
    from dmf.engine.kernels import aligned_empty_float32, seeded_normals
    from dmf.engine.solve import FactorTable, solve_block

    values = np.array([4.0, 3.0, 5.0], np.float32)
    (piece,) = split_rows(np.array([0, 0, 1]), np.array([0, 1, 1]), values, np.array([0, 2]))
    values.flags.writeable = False  # as partitions that arrive from another worker are
    split_rows(np.array([0, 0, 1]), np.array([0, 1, 1]), values, np.array([0, 2]))
    block = assemble_block([piece], 0, 2, "user")
    factors = aligned_empty_float32((2, objective.rank))
    factors[:] = 0.1
    other = FactorTable(factors, np.zeros(2, np.float32))
    if objective.implicit:
        other.gram = factors.astype(np.float64).T @ factors.astype(np.float64)
    solved = solve_block(block, other, None, 4.0, objective, True)
    rating_scores(block.indptr, block.cols, solved.factors, factors)
    seeded_normals(0, 1, np.zeros(2, np.uint64), objective.rank)  # the initial tables' draws


def compile_once(client, objective) -> None:
    """Before a fit on ``client``: when some worker has not compiled dmf's kernels yet, compile
    them on one worker first (one log line says so)."""
    from dmf.engine.kernels import kernels_compiled

    address = getattr(client.scheduler, "address", None)
    if address in _CHECKED:
        return
    compiled = client.run(kernels_compiled)
    if compiled and not all(compiled.values()):
        logger.info("compiling dmf's kernels once, on one worker (the first fit of this installation; numba caches "
                    "them on disk and the other workers load them)")
        client.submit(compile_kernels, objective, workers=[min(compiled)], pure=False).result()
    _CHECKED.add(address)
