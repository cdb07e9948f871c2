"""Kernels against dense NumPy, in-process (no Dask); and compiling them once per installation on real workers."""

import shutil

import numpy as np
import pytest
import scipy.sparse as sp
from cluster_harness import SubprocessCluster
from conftest import REPO_ROOT
from distributed import Client
from helpers import brute_force_top_k, random_ratings

import dmf
from dmf.engine._compiled import top_k_of_products
from dmf.engine.kernels import RatingBlock, SolveOptions, padded_lengths, solve_rows


def _block(matrix: sp.csr_matrix, start: int = 0) -> RatingBlock:
    matrix = matrix.tocsr()
    matrix.sort_indices()
    return RatingBlock(start, matrix.indptr.astype(np.int64), matrix.indices.astype(np.int32),
                       matrix.data.astype(np.float32))


@pytest.mark.parametrize("append_ones", [False, True])
def test_solve_rows_equals_dense_normal_equations(append_ones):
    rng = np.random.default_rng(0)
    counts = np.r_[0, 1, 2, 3, 17, 40, 300]  # rows of very different lengths, one empty
    n_other, rank = 400, 6
    rows, cols = [], []
    for r, n in enumerate(counts):
        rows += [r] * n
        cols += list(rng.choice(n_other, n, replace=False))
    matrix = sp.csr_matrix((rng.normal(size=len(rows)), (rows, cols)), shape=(len(counts), n_other))
    block = _block(matrix)
    other = rng.normal(size=(n_other, rank)).astype(np.float32)
    targets = rng.normal(size=block.nnz)
    reg = np.r_[np.full(rank, 0.3), [0.05]][: rank + append_ones]
    options = SolveOptions(reg, np.full(rank + append_ones, 2.0))
    solution = solve_rows(block, other, targets, options, append_ones=append_ones)
    for r in range(len(counts)):
        lo, hi = block.indptr[r], block.indptr[r + 1]
        if hi == lo:
            assert not solution[r].any()
            continue
        design = other[block.cols[lo:hi]].astype(np.float64)
        if append_ones:
            design = np.hstack([design, np.ones((hi - lo, 1))])
        gram = design.T @ design + np.diag(reg * (hi - lo) + 2.0)
        expected = np.linalg.solve(gram, design.T @ targets[lo:hi])
        np.testing.assert_allclose(solution[r], expected, rtol=1e-9, atol=1e-10)


def _implicit_problem(seed=0):
    rng = np.random.default_rng(seed)
    matrix = sp.random(30, 200, density=0.1, random_state=seed, data_rvs=lambda n: rng.integers(1, 6, n)).tocsr()
    block = _block(matrix)
    other = rng.normal(size=(200, 5)).astype(np.float32)
    return block, other, rng


def _dense_implicit(block, other, alpha, reg, nonnegative=False):
    """Hu-Koren-Volinsky per row over all columns, from the dense matrix (no Gram trick)."""
    from scipy.optimize import nnls

    dense = np.zeros((block.n_rows, len(other)))
    dense[block.row_of_rating(), block.cols] = block.values
    y = other.astype(np.float64)
    out = []
    for row in dense:
        confidence = 1 + alpha * np.abs(row)
        preference = (row > 0).astype(float)
        gram = (y * confidence[:, None]).T @ y + reg * np.eye(y.shape[1])
        rhs = y.T @ (confidence * preference)
        if nonnegative:
            lower = np.linalg.cholesky(gram)
            out.append(nnls(lower.T, np.linalg.solve(lower, rhs))[0])
        else:
            out.append(np.linalg.solve(gram, rhs))
    return np.array(out)


def _implicit_solve(block, other, alpha, reg, **options):
    values = block.values.astype(np.float64)
    confidence = 1 + alpha * np.abs(values)
    gram = other.astype(np.float64).T @ other.astype(np.float64)
    width = other.shape[1]
    solve_options = SolveOptions(np.zeros(width), np.full(width, reg), gram, **options)
    return solve_rows(block, other, confidence * (values > 0), solve_options, weights=confidence - 1)


def test_implicit_gram_trick_equals_dense_solve_and_cg_approaches_it():
    block, other, _ = _implicit_problem()
    exact = _dense_implicit(block, other, alpha=2.0, reg=0.1)
    counts = block.counts
    solved = _implicit_solve(block, other, 2.0, 0.1)
    np.testing.assert_allclose(solved[counts > 0], exact[counts > 0], rtol=1e-8, atol=1e-10)
    errors = [np.abs(_implicit_solve(block, other, 2.0, 0.1, solver="cg", cg_steps=steps) - exact)[counts > 0].max()
              for steps in (1, 2, 3, 5)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-6 < errors[0]


@pytest.mark.parametrize("implicit, append_ones", [(False, False), (False, True), (True, False)])
def test_compiled_conjugate_gradient_equals_numpy_reference(implicit, append_ones):
    block, other, rng = _implicit_problem(2)
    width = other.shape[1] + int(append_ones)
    values = block.values.astype(np.float64)
    weights = 2.0 * values if implicit else None
    gram = other.astype(np.float64).T @ other.astype(np.float64) if implicit else None
    options = SolveOptions(np.full(width, 0.1), np.full(width, 0.5), gram, solver="cg", cg_steps=3)
    start = rng.normal(size=(block.n_rows, width))
    compiled_scores, reference_scores = np.empty(block.nnz), np.empty(block.nnz)
    compiled = solve_rows(block, other, values, options, weights=weights, initial=start, append_ones=append_ones,
                          scores=compiled_scores)
    reference_options = SolveOptions(options.reg, options.damping, gram, solver="cg-numpy", cg_steps=3)
    reference = solve_rows(block, other, values, reference_options, weights=weights, initial=start,
                           append_ones=append_ones, scores=reference_scores)
    assert not np.array_equal(compiled, start)
    np.testing.assert_allclose(compiled, reference, rtol=1e-5, atol=1e-6)
    # the scores are the other side's row (with the appended one) times the solved row
    design = np.hstack([other.astype(np.float64), np.ones((len(other), 1))])[:, :width]
    rows = np.repeat(np.arange(block.n_rows), np.diff(block.indptr))
    expected_scores = np.einsum("ij,ij->i", design[block.cols], compiled[rows])
    np.testing.assert_allclose(compiled_scores, expected_scores, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(reference_scores, expected_scores, rtol=1e-5, atol=1e-6)


def test_nonnegative_solve_equals_dense_nnls():
    block, other, _ = _implicit_problem(1)
    exact = _dense_implicit(block, other, alpha=1.0, reg=0.5, nonnegative=True)
    solved = _implicit_solve(block, other, 1.0, 0.5, nonnegative=True)
    counts = block.counts
    assert (solved >= 0).all()
    np.testing.assert_allclose(solved[counts > 0], exact[counts > 0], atol=1e-8)


def test_padded_lengths_cover_counts_with_bounded_waste():
    counts = np.arange(1, 100_000)
    lengths = padded_lengths(counts)
    assert (lengths >= counts).all()
    assert (lengths <= np.maximum(counts * 1.25 + 1, 16)).all()


def _top_k(products, k, row_bias=None, col_term=None, seen=None):
    """Run the compiled top-k kernel on a copy; lists of selected columns per row, and values."""
    n_rows, n_cols = products.shape
    row_bias = np.zeros(n_rows, np.float32) if row_bias is None else row_bias
    col_term = np.zeros(n_cols, np.float32) if col_term is None else col_term
    seen = np.zeros(products.shape, bool) if seen is None else seen
    seen_rows, seen_cols = np.nonzero(seen)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(seen_rows, minlength=n_rows))])
    columns, values, counts = top_k_of_products(products.copy(), row_bias, col_term, indptr, seen_cols.astype(np.int32), k)
    return [list(columns[r, : counts[r]]) for r in range(n_rows)], [list(values[r, : counts[r]]) for r in range(n_rows)]


def test_top_k_matches_brute_force_with_biases_and_exclusions():
    rng = np.random.default_rng(1)
    products = rng.normal(size=(50, 30)).astype(np.float32)
    row_bias = rng.normal(size=50).astype(np.float32)
    col_term = rng.normal(size=30).astype(np.float32)
    seen = rng.random((50, 30)) < 0.3
    seen[0, :28], seen[0, 28:] = True, False  # two unseen items, k = 5
    seen[1, :] = True  # nothing left
    got, values = _top_k(products, 5, row_bias, col_term, seen)
    scores = (products + row_bias[:, None]) + col_term[None, :]
    assert got == brute_force_top_k(scores, seen, 5)
    assert len(got[0]) == 2 and got[1] == []
    assert all(values[r] == [scores[r, c] for c in got[r]] for r in range(50))


def test_top_k_breaks_ties_by_lower_column():
    products = np.array([[1, 3, 3, 3, 0, 3], [2, 2, 2, 2, 2, 2]], dtype=np.float32)
    got, _ = _top_k(products, 2)
    assert got == [[1, 2], [0, 1]]
    got, _ = _top_k(products, 10)
    assert got[0] == [1, 2, 3, 5, 0, 4]


@pytest.mark.parametrize("implicit", [False, True])
def test_compiled_block_solve_matches_numpy_reference(implicit):
    """The compiled CG path of a block solve computes targets, weights and the training loss
    inside the kernel; the NumPy CG reference computes them as arrays: both must agree."""
    import dataclasses

    from dmf.engine.solve import FactorTable, Objective, gram_of, solve_block

    rng = np.random.default_rng(3)
    matrix = sp.random(50, 300, density=0.1, random_state=1, data_rvs=lambda n: rng.integers(1, 6, n).astype(float))
    block = _block(matrix, start=0)
    objective = Objective(rank=5, reg=0.1, bias_reg=0.05, damping=1.0, use_biases=not implicit, implicit=implicit,
                          alpha=2.0, solver="cg", cg_steps=3)
    factors = rng.normal(size=(300, 5)).astype(np.float32)
    other = FactorTable(factors, None if implicit else rng.normal(size=300).astype(np.float32),
                        gram=gram_of(factors) if implicit else None)
    previous = FactorTable(rng.normal(size=(50, 5)).astype(np.float32),
                           None if implicit else rng.normal(size=50).astype(np.float32))
    compiled = solve_block(block, other, previous, 3.5, objective, True)
    reference = solve_block(block, other, previous, 3.5, dataclasses.replace(objective, solver="cg-numpy"), True)
    np.testing.assert_allclose(compiled.factors, reference.factors, rtol=1e-5, atol=1e-6)
    if not implicit:
        np.testing.assert_allclose(compiled.biases, reference.biases, rtol=1e-5, atol=1e-6)
    assert compiled.loss == pytest.approx(reference.loss, rel=1e-9)
    assert compiled.count == reference.count == block.nnz


@pytest.mark.slow
def test_a_fresh_installation_compiles_the_kernels_on_one_worker_only(tmp_path, monkeypatch):
    """Workers that import a copy of dmf without numba's cache: the first fit compiles the
    solver kernel in one worker; the other loads it from the on-disk cache."""
    copy = tmp_path / "site"
    shutil.copytree(REPO_ROOT / "dmf", copy / "dmf", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("PYTHONPATH", str(copy))
    with SubprocessCluster(n_workers=2) as cluster, Client(cluster.address) as client:
        where = client.run(lambda: __import__("dmf.engine._compiled").engine._compiled.__file__)
        assert all(path.startswith(str(copy)) for path in where.values()), where
        dmf.ALS(rank=4, max_iter=2).fit(random_ratings(200, 80, 0.1, seed=3), client=client)
        stats = client.run(lambda: [sum(counter.values()) for counter in (
            __import__("dmf.engine._compiled").engine._compiled.cg_solve_rows.stats[1:3])])
    assert sorted(stats.values()) == [[0, 1], [1, 0]], stats  # per worker: [loaded, compiled]


@pytest.mark.parametrize("width", [1, 7, 64])
def test_compiled_seeded_normals_are_the_numpy_reference_bit_for_bit(width):
    from dmf.engine.kernels import seeded_normals
    from dmf.random import entity_normals

    rng = np.random.default_rng(width)
    hashes = np.concatenate([rng.integers(0, 2**63, 500, dtype=np.int64).astype(np.uint64) | np.uint64(2**63),
                             np.arange(500, dtype=np.uint64)])
    np.testing.assert_array_equal(seeded_normals(11, 3, hashes, width), entity_normals(11, 3, hashes, width))
    normals = seeded_normals(11, 3, hashes, 64)
    assert abs(normals.mean()) < 0.02 and abs(normals.std() - 1) < 0.02


@pytest.mark.parametrize("ids", [np.array([5, 3, 5, 0, 9, 3]), np.array([2**40, 7, 7, -3]),
                                 np.array(["b", "a", "b"], dtype=object), np.array([], dtype=np.int64)])
def test_distinct_ids_are_the_set_of_the_ids(ids):
    from dmf.engine.ratings_pass import distinct_ids

    found = distinct_ids(ids)
    assert sorted(found.tolist()) == sorted(set(ids.tolist())) and found.dtype == ids.dtype


def test_csr_rows_with_values_in_the_sort_keys_equal_a_dense_reference():
    from dmf.engine.blocks import rows_to_csr

    rng = np.random.default_rng(4)
    dense = np.where(rng.random((300, 200)) < 0.1, rng.integers(1, 11, (300, 200)) / 2, 0).astype(np.float32)
    rows, cols = np.nonzero(dense)
    order = rng.permutation(len(rows))
    rows, cols, values = rows[order].astype(np.int32), cols[order].astype(np.int32), dense[rows, cols][order]
    for values_in_keys in (False, True):
        indptr, got_cols, got_values = rows_to_csr(rows, cols, values, 300, values_in_keys=values_in_keys)
        got = sp.csr_matrix((got_values, got_cols, indptr), shape=(300, 200))
        assert got.has_sorted_indices and got_values.dtype == np.float32
        np.testing.assert_array_equal(got.toarray(), dense)
    # wide rows and columns (more than 32 bits together) take the positional path
    indptr, got_cols, got_values = rows_to_csr(np.array([2, 0, 2]), np.array([2**20, 5, 3], np.int32),
                                               np.array([1.5, 2.5, 3.5], np.float32), 2**13, values_in_keys=True)
    assert indptr[:4].tolist() == [0, 1, 1, 3] and got_cols.tolist() == [5, 3, 2**20] and got_values.tolist() == [2.5, 3.5, 1.5]


def _new_mappings_for_an_array(nbytes: int) -> int:
    """How many mmapped chunks glibc adds for a NumPy array of ``nbytes`` (mallinfo2's hblks)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]

    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = MallInfo2
    before = mallinfo2().hblks
    array = np.ones(nbytes // 8)
    added = mallinfo2().hblks - before
    del array
    return int(added)


def test_fits_set_the_allocator_of_every_worker(client):
    """After a fit every worker takes a 4 MiB array from the heap, not from a fresh mapping (as
    Dask's ``MALLOC_TRIM_THRESHOLD_`` would have it); a 64 MiB one, above the 32 MiB
    threshold, still gets its own mapping."""
    dmf.ALS(rank=2, max_iter=1).fit(random_ratings(20, 15, 0.3, seed=1))
    assert set(client.run(_new_mappings_for_an_array, 4 * 2**20).values()) == {0}
    assert set(client.run(_new_mappings_for_an_array, 64 * 2**20).values()) == {1}
