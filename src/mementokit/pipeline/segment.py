"""Stage 4: cut the sentences into blocks at the exact optimum of the paper's objective.

Given sentence token counts t[0..n-1] and boundary scores b[0..n-2] (b[j] sits between sentence j and j+1),
a segmentation into K blocks with cut set C (|C| = K - 1) scores

    g = (1/K) * sum_{j in C} b[j]  -  lambda * std(sizes) / mean(sizes)

where sizes are the blocks' token counts and std is the population standard deviation, so with
S = sum(t) and Q = sum(size^2):  std/mean = sqrt(K*Q - S^2) / S.  K = 1 scores 0. Every block holds at
least `min_block_tokens`; with `max_block_tokens` a block holds at most that many, except a block of one
sentence that is longer on its own (it cannot be cut).

Why this is exact. For a fixed K, g depends on a segmentation only through B = sum of cut scores and Q,
and it is increasing in B, decreasing in Q and CONVEX in (B, Q) (-sqrt of an affine function). A convex
function's maximum over a finite point set is reached at a vertex of the set's convex hull, and since g is
monotone, at a vertex of the upper-left chain: a segmentation maximising B - alpha*Q for some alpha >= 0.
For a fixed alpha that objective is a sum over blocks, so a dynamic programme over (position, blocks so
far) finds, in one pass, the maximiser for every K at once. We walk the chain by parametric search: between
two known chain vertices p_lo, p_hi with supporting slopes a_lo > a_hi, any further vertex lies in the
triangle under the two supporting lines and above the chord; g's maximum over that triangle is at one of
its corners (convexity), so a triangle whose apex scores no better than the best segmentation found so far
is discarded; otherwise we solve at the chord's slope, which either finds a new vertex above the chord or
proves there is none. K itself is pruned first by the bound max_B(K)/K (std >= 0). Tested against brute
force on every small case hypothesis generates.

Cost: one pass is O(K_cap * n * w) with w the number of admissible block starts, vectorised in numpy; a
few passes are enough in practice (see benchmarks/bench_pipeline.py).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mementokit.errors import InputError

_ROWS_PER_CHUNK = 256
_FINE_STRIDE = 16  # below this row spacing, solve all remaining rows in one vectorised pass
_MAX_SOLVES = 5000  # parametric solves; far above what any input has needed, a guard against float loops


@dataclass(frozen=True)
class Segmentation:
    blocks: list[tuple[int, int]]  # inclusive [start, end] sentence indices, tiling 0..n-1
    objective: float
    block_tokens: list[int]
    solves: int = 0  # dynamic-programme passes used (for benchmarks)

    @property
    def cuts(self) -> list[int]:
        """Boundary indices j (between sentence j and j + 1) where a block ends."""
        return [end for _, end in self.blocks[:-1]]


def segmentation_objective(
    cuts: Sequence[int],
    boundary_scores: Sequence[float],
    token_counts: Sequence[int],
    variance_penalty: float = 0.5,
) -> float:
    """g for the blocks that end at the given boundaries (see the module docstring)."""
    sizes = _sizes(sorted(cuts), token_counts)
    k = len(sizes)
    if k <= 1:
        return 0.0
    total = sum(sizes)
    b = sum(float(boundary_scores[j]) for j in cuts)
    return _objective(k, b, sum(s * s for s in sizes), total, variance_penalty)


def _objective(k: int, b: float, q: float, total: int, lam: float) -> float:
    if k <= 1:
        return 0.0
    if total <= 0:
        return b / k
    spread = k * q - total * total  # K^2 * variance; exact for integer q
    return b / k - lam * math.sqrt(max(spread, 0.0)) / total


def _sizes(cuts: Sequence[int], token_counts: Sequence[int]) -> list[int]:
    sizes, start = [], 0
    for j in list(cuts) + [len(token_counts) - 1]:
        sizes.append(int(sum(token_counts[start : j + 1])))
        start = j + 1
    return sizes


def _blocks_from_cuts(cuts: Sequence[int], n: int) -> list[tuple[int, int]]:
    blocks, start = [], 0
    for j in list(cuts) + [n - 1]:
        blocks.append((start, j))
        start = j + 1
    return blocks


def _block_allowed(size: int, sentences: int, min_tokens: int, max_tokens: int | None) -> bool:
    if size < min_tokens:
        return False
    return max_tokens is None or size <= max_tokens or sentences == 1


def _validate(
    boundary_scores: Sequence[float], token_counts: Sequence[int], min_tokens: int, max_tokens: int | None
) -> None:
    n = len(token_counts)
    if n == 0:
        raise InputError("no sentences to segment", field="sentences")
    if len(boundary_scores) != n - 1:
        raise InputError(
            f"{len(boundary_scores)} boundary scores for {n} sentences (need one per gap: {n - 1})",
            field="boundary_scores",
        )
    if any(not math.isfinite(float(s)) for s in boundary_scores):
        raise InputError("boundary scores must be finite numbers", field="boundary_scores")
    if any(int(t) < 0 for t in token_counts):
        raise InputError("token counts must be >= 0", field="sentences")
    if min_tokens < 0 or (max_tokens is not None and max_tokens < min_tokens):
        raise InputError(
            f"need 0 <= min_block_tokens <= max_block_tokens, got {min_tokens}, {max_tokens}", field="min_block_tokens"
        )


def segment_brute_force(
    boundary_scores: Sequence[float],
    token_counts: Sequence[int],
    *,
    min_block_tokens: int = 200,
    max_block_tokens: int | None = None,
    variance_penalty: float = 0.5,
) -> Segmentation | None:
    """Try every cut set (2^(n-1) of them): the reference the fast solver is tested against. None: infeasible."""
    _validate(boundary_scores, token_counts, min_block_tokens, max_block_tokens)
    n = len(token_counts)
    best: tuple[float, tuple[int, ...]] | None = None
    for r in range(n):
        for cuts in itertools.combinations(range(n - 1), r):
            blocks = _blocks_from_cuts(cuts, n)
            sizes = _sizes(cuts, token_counts)
            if not all(
                _block_allowed(s, e - b + 1, min_block_tokens, max_block_tokens) for s, (b, e) in zip(sizes, blocks)
            ):
                continue
            value = segmentation_objective(cuts, boundary_scores, token_counts, variance_penalty)
            if best is None or value > best[0]:
                best = (value, cuts)
    if best is None:
        return None
    return Segmentation(_blocks_from_cuts(best[1], n), best[0], _sizes(best[1], token_counts))


@dataclass
class _Point:
    b: float  # sum of cut scores
    q: int  # sum of squared block sizes
    starts: tuple[int, ...]  # prefix positions where blocks 2..K start (= cut after sentence start-1)


class _Solver:
    """Dynamic programmes over prefix positions 0..n (a block is sentences j..i-1, i.e. positions j -> i)."""

    def __init__(self, scores: np.ndarray, tokens: np.ndarray, min_tokens: int, max_tokens: int | None):
        self.n = len(tokens)
        self.prefix = np.concatenate([[0], np.cumsum(tokens, dtype=np.int64)])  # P[i] = tokens before sentence i
        self.cut_value = np.concatenate([[0.0], scores.astype(np.float64), [0.0]])  # c[j]: block starting at j
        p = self.prefix
        # latest start j with P[i] - P[j] >= min, earliest start j with P[i] - P[j] <= max
        self.last_start = np.searchsorted(p, p - min_tokens, side="right") - 1
        self.last_start = np.minimum(self.last_start, np.arange(self.n + 1) - 1)
        self.first_start = (
            np.zeros(self.n + 1, dtype=np.int64)
            if max_tokens is None
            else np.searchsorted(p, p - max_tokens, side="left")
        )
        self.has_max = max_tokens is not None
        self.solves = 0

    def solve(self, w_b: float, w_q: float, k_cap: int, wanted: set[int] | None = None) -> dict[int, _Point]:
        """For every K <= k_cap (in `wanted`), a segmentation into exactly K blocks maximising w_b*B - w_q*Q."""
        self.solves += 1
        n, p = self.n, self.prefix
        p_f = p.astype(np.float64)
        prev = np.full(n + 1, -np.inf)
        prev[0] = 0.0
        back: list[np.ndarray] = []
        found: dict[int, _Point] = {}
        rows_all = np.arange(n + 1)
        for k in range(1, k_cap + 1):
            f = prev + w_b * self.cut_value
            finite = np.flatnonzero(np.isfinite(f))
            if finite.size == 0:
                break
            j_lo = int(finite[0])
            cur = np.full(n + 1, -np.inf)
            arg = np.full(n + 1, -1, dtype=np.int64)
            rows = rows_all[self.last_start >= j_lo]
            if w_q == 0.0 and not self.has_max:
                # max over a prefix of starts: a running maximum does it in O(n)
                run_max = np.maximum.accumulate(f)
                idx = np.where(f == run_max, np.arange(n + 1), 0)
                run_arg = np.maximum.accumulate(idx)
                cur[rows] = run_max[self.last_start[rows]]
                arg[rows] = run_arg[self.last_start[rows]]
            elif not self.has_max:
                # min size only: the admissible starts of row i are [j_lo, last_start[i]], a staircase, and the
                # quadratic cost makes the matrix Monge, so the leftmost best start never decreases with i
                cur[rows], arg[rows] = self._monotone_rows(f, rows, j_lo, w_q)
            else:
                for c0 in range(0, rows.size, _ROWS_PER_CHUNK):
                    chunk = rows[c0 : c0 + _ROWS_PER_CHUNK]
                    hi = int(self.last_start[chunk].max())
                    lo = j_lo
                    if self.has_max:  # earliest start within the max size, or the one-sentence exception
                        lo = max(j_lo, min(int(self.first_start[chunk].min()), int(chunk.min()) - 1))
                    if hi < lo:
                        continue
                    cols = np.arange(lo, hi + 1)
                    vals = np.broadcast_to(f[lo : hi + 1], (chunk.size, cols.size)).copy()  # (rows, starts)
                    if w_q != 0.0:
                        gap = p_f[chunk][:, None] - p_f[lo : hi + 1][None, :]
                        vals -= w_q * gap * gap
                    bad = cols[None, :] > self.last_start[chunk][:, None]
                    if self.has_max:
                        bad |= (cols[None, :] < self.first_start[chunk][:, None]) & (
                            cols[None, :] != chunk[:, None] - 1
                        )
                    vals[bad] = -np.inf
                    best = vals.argmax(axis=1)
                    cur[chunk] = vals[np.arange(chunk.size), best]
                    arg[chunk] = cols[best]
            arg[~np.isfinite(cur)] = -1
            back.append(arg)
            if np.isfinite(cur[n]) and (wanted is None or k in wanted):
                found[k] = self._point(back, k)
            prev = cur
        return found

    def _ragged_best(
        self, f: np.ndarray, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, w_q: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best value and leftmost best start of each row over its own start range [lo, hi] (lo <= hi)."""
        lens = hi - lo + 1
        offsets = np.cumsum(lens) - lens
        row_of = np.repeat(rows, lens)
        col = np.arange(int(lens.sum())) - np.repeat(offsets - lo, lens)
        vals = f[col]
        if w_q != 0.0:
            gap = (self.prefix[row_of] - self.prefix[col]).astype(np.float64)
            vals = vals - w_q * gap * gap
        best = np.maximum.reduceat(vals, offsets)
        position = np.where(vals == np.repeat(best, lens), np.arange(vals.size), vals.size)
        return best, col[np.minimum.reduceat(position, offsets)]

    def _monotone_rows(self, f: np.ndarray, rows: np.ndarray, j_lo: int, w_q: float) -> tuple[np.ndarray, np.ndarray]:
        """Every row's best start, using that the (leftmost) best start never decreases from row to row.

        Rows at multiples of _FINE_STRIDE are solved coarse to fine (each row's best start lies between
        its solved neighbours' best starts, so each level scans about n starts in all); then every other
        row in one vectorised pass between the two sampled rows around it.
        """
        size = rows.size
        hi_all = self.last_start[rows]
        best = np.empty(size)
        arg = np.empty(size, dtype=np.int64)

        def solve_rows(level: np.ndarray, left: np.ndarray, right: np.ndarray) -> None:
            lo = np.maximum(arg[left], j_lo)
            hi = np.minimum(hi_all[level], arg[right])
            best[level], arg[level] = self._ragged_best(f, rows[level], lo, np.maximum(hi, lo), w_q)

        sampled = np.unique(np.concatenate([np.arange(0, size, _FINE_STRIDE), [size - 1]]))
        ends = sampled[[0, -1]] if sampled.size > 1 else sampled
        best[ends], arg[ends] = self._ragged_best(f, rows[ends], np.full(ends.size, j_lo), hi_all[ends], w_q)
        stride = 1 << max(0, (sampled.size - 1).bit_length())
        while stride > 1:
            stride //= 2
            at = np.arange(stride, sampled.size - 1, 2 * stride)
            if at.size:
                solve_rows(sampled[at], sampled[at - stride], sampled[np.minimum(at + stride, sampled.size - 1)])
        rest = np.setdiff1d(np.arange(size), sampled, assume_unique=True)
        if rest.size:
            left = rest - rest % _FINE_STRIDE
            solve_rows(rest, left, np.minimum(left + _FINE_STRIDE, size - 1))
        return best, arg

    def _point(self, back: list[np.ndarray], k: int) -> _Point:
        starts, i = [], self.n
        for layer in range(k - 1, -1, -1):
            j = int(back[layer][i])
            starts.append(j)
            i = j
        starts = starts[::-1][1:]  # drop the first block's start (0)
        bounds = [0, *starts, self.n]
        sizes = [int(self.prefix[b] - self.prefix[a]) for a, b in zip(bounds, bounds[1:])]
        b = float(sum(self.cut_value[j] for j in starts))
        return _Point(b, sum(s * s for s in sizes), tuple(starts))


@dataclass
class _Interval:
    lo: _Point
    a_lo: float  # supporting slope at lo (math.inf at the min-Q end)
    hi: _Point
    a_hi: float  # supporting slope at hi (0 at the max-B end)


def _apex(iv: _Interval) -> tuple[float, float]:
    """Corner of the triangle that can still hold chain vertices: where the two supporting lines meet."""
    lo, hi = iv.lo, iv.hi
    if math.isinf(iv.a_lo):
        return hi.b + iv.a_hi * (lo.q - hi.q), float(lo.q)
    if iv.a_lo <= iv.a_hi:
        return max(lo.b, hi.b), float(lo.q)  # both ends optimal at one slope: the chord is the hull
    q = (hi.b - lo.b + iv.a_lo * lo.q - iv.a_hi * hi.q) / (iv.a_lo - iv.a_hi)
    q = min(max(q, lo.q), hi.q)
    return lo.b + iv.a_lo * (q - lo.q), q


def optimal_segmentation(
    boundary_scores: Sequence[float],
    token_counts: Sequence[int],
    *,
    min_block_tokens: int = 200,
    max_block_tokens: int | None = None,
    variance_penalty: float = 0.5,
) -> Segmentation:
    """The segmentation maximising the objective exactly (see the module docstring).

    A trace that cannot hold even one block of `min_block_tokens` becomes a single block. When a maximum
    size makes every segmentation infeasible, InputError says so.
    """
    _validate(boundary_scores, token_counts, min_block_tokens, max_block_tokens)
    tokens = np.asarray([int(t) for t in token_counts], dtype=np.int64)
    scores = np.asarray([float(s) for s in boundary_scores], dtype=np.float64)
    n, total, lam = len(tokens), int(tokens.sum()), float(variance_penalty)
    if total < min_block_tokens or n == 1:
        return Segmentation([(0, n - 1)], 0.0, [total])

    solver = _Solver(scores, tokens, min_block_tokens, max_block_tokens)
    k_max = n if min_block_tokens <= 0 else min(n, total // min_block_tokens)
    eps = 1e-12 * max(1.0, float(np.abs(scores).max(initial=0.0)))

    def g(k: int, pt: _Point) -> float:
        return _objective(k, pt.b, pt.q, total, lam)

    def same(a: _Point, b: _Point) -> bool:  # one point of the (Q, B) plane (zero-token sentences make twins)
        return a.q == b.q and abs(a.b - b.b) <= eps

    # 1. max B for every K (cheap): a first incumbent, and the bound max_B(K)/K for pruning K
    top = solver.solve(1.0, 0.0, k_max)
    if not top:
        raise InputError(
            f"no segmentation satisfies min_block_tokens={min_block_tokens}, max_block_tokens={max_block_tokens}",
            field="max_block_tokens",
        )
    best_k, best_pt = max(top.items(), key=lambda kv: (g(*kv), -kv[0]))
    incumbent = g(best_k, best_pt)
    alive = [k for k, pt in top.items() if k >= 2 and pt.b / k > incumbent + eps]
    if alive:
        # 2. min Q for the surviving K: the other end of each chain
        bottom = solver.solve(0.0, 1.0, max(alive), set(alive))
        intervals: dict[int, list[_Interval]] = {}
        for k in alive:
            lo = bottom[k]
            if g(k, lo) > incumbent:
                best_k, best_pt, incumbent = k, lo, g(k, lo)
            intervals[k] = [_Interval(lo, math.inf, top[k], 0.0)]
        # 3. best-first parametric search over the chain of every K at once
        while True:
            heap = []
            for k, ivs in intervals.items():
                kept = []
                for iv in ivs:
                    b, q = _apex(iv)
                    bound = _objective(k, b, q, total, lam)
                    if bound > incumbent + eps and iv.hi.q > iv.lo.q:
                        kept.append(iv)
                        heapq.heappush(heap, (-bound, k, len(kept) - 1))
                intervals[k] = kept
            intervals = {k: v for k, v in intervals.items() if v}
            if not heap:
                break
            if solver.solves > _MAX_SOLVES:
                raise RuntimeError("segmentation search did not converge (please report this input)")
            _, k, idx = heap[0]
            target = intervals[k][idx]
            alpha = (target.hi.b - target.lo.b) / (target.hi.q - target.lo.q)
            found = solver.solve(1.0, alpha, max(intervals), set(intervals))
            for kk, ivs in intervals.items():
                pt = found.get(kk)
                if pt is None:
                    continue
                if g(kk, pt) > incumbent:
                    best_k, best_pt, incumbent = kk, pt, g(kk, pt)
                split: list[_Interval] = []
                for iv in ivs:
                    if not (iv.a_hi <= alpha <= iv.a_lo):
                        split.append(iv)
                    elif same(pt, iv.lo):
                        split.append(_Interval(iv.lo, alpha, iv.hi, iv.a_hi))
                    elif same(pt, iv.hi):
                        split.append(_Interval(iv.lo, iv.a_lo, iv.hi, alpha))
                    elif iv is target and pt.b - alpha * pt.q <= iv.lo.b - alpha * iv.lo.q + eps:
                        split.append(_Interval(iv.lo, alpha, iv.hi, alpha))  # nothing above the chord: done
                    else:
                        split += [_Interval(iv.lo, iv.a_lo, pt, alpha), _Interval(pt, alpha, iv.hi, iv.a_hi)]
                intervals[kk] = split

    cuts = [j - 1 for j in best_pt.starts]
    blocks = _blocks_from_cuts(cuts, n)
    return Segmentation(blocks, incumbent, _sizes(cuts, tokens.tolist()), solver.solves)
