"""Per-row Rice parameters and per-row entry points into a gap stream.

A layer is M rows of K weights (dense (M, K): M outputs; conv
(C_out, C_in, 3, 3): M = C_out, K = 9 C_in), flattened row-major.

Per-row Rice (method ``rice_rows``, parameters ``(k_min, width, skip)``).
The stream starts with a table of M fields of ``width`` bits, one per row:

* ``skip = 0``: field ``v`` gives ``k_r = k_min + v``;
* ``skip = 1``: ``v = 0`` marks an empty row (no ones), else
  ``k_r = k_min + v - 1``. Empty rows are removed before coding: the gap
  stream codes the M' non-empty rows concatenated (M' K positions).

The table is followed by the gap stream of :mod:`golomb` over the (kept)
rows with ``row_m = 2**k_r``: the gap that starts at position s uses the k of
the row holding s, and gaps run across row boundaries. ``(k_min, width,
skip)`` and every k_r are chosen to minimise the exact total
``M * width + sum of codeword bits``.

Row index (optional, for random access; sequential decoding does not need
it). Entry c of kept row c = (bit offset of the codeword of the first one at
a position >= c K, carry = c K - s where s is the start of that gap). A
decoder for row c seeks to the offset, sets ``s = c K - carry`` and runs the
usual loop until a one lands at or past (c + 1) K. Cost: M' entries of
``bit_length(n_bits)`` + ``bit_length(max carry)`` bits, plus 2 bytes.
"""
import numpy as np

from .bitio import bits_from_words, write_fields
from .golomb import (
    ERRORS,
    RICE_KS,
    _params,
    bit_length,
    check_stream,
    golomb_fields,
    golomb_lengths,
    golomb_loop,
    ones_and_gaps,
)

MAX_WIDTH = 5          # 2**5 = 32 table values cover k = 0..20 and the empty mark


def row_cost_table(bits2d):
    """Exact bits (M, 21): cost[r, k] = codeword bits of the gaps starting in row r with Rice k."""
    M, K = bits2d.shape
    _, gaps, starts = ones_and_gaps(bits2d)
    rows = starts // max(K, 1)
    cost = np.zeros((M, RICE_KS.size), np.int64)
    for k in RICE_KS:
        per_gap = (gaps >> k) + 1 + k
        cost[:, k] = np.bincount(rows, weights=per_gap, minlength=M)[:M].astype(np.int64)
    return cost


def _best_window(cost, n_rows, reserved):
    """Min over (k_min, width) of sum_r min_{k in window} cost[r, k] + n_rows * width.

    The window holds ``2**width - reserved`` consecutive k values. Returns
    (total, k_min, width, k per row of ``cost``).
    """
    best = None
    for width in range(MAX_WIDTH + 1):
        slots = (1 << width) - reserved
        if slots < 1:
            continue
        for k_min in range(RICE_KS.size):
            window = cost[:, k_min:min(k_min + slots, RICE_KS.size)]
            total = int(window.min(1).sum()) + n_rows * width
            if best is None or total < best[0]:
                best = (total, k_min, width, k_min + window.argmin(1))
            if k_min + slots >= RICE_KS.size:
                break
    return best


def row_rice_plan(bits2d):
    """Best per-row Rice parameters of a (M, K) array.

    Returns (k_rows (M,), k_min, width, skip, total_bits); ``k_rows[r] = -1``
    for the rows skipped as empty; total_bits includes the M * width table.
    """
    M = bits2d.shape[0]
    total, k_min, width, k_rows = _best_window(row_cost_table(bits2d), M, 0)
    best = (total, k_min, width, 0, k_rows)
    kept = bits2d.any(1)
    if not kept.all():
        total, k_min, width, k_kept = _best_window(row_cost_table(bits2d[kept]), M, 1)
        if total < best[0]:
            k_rows = np.full(M, -1, np.int64)
            k_rows[kept] = k_kept
            best = (total, k_min, width, 1, k_rows)
    total, k_min, width, skip, k_rows = best
    return np.asarray(k_rows, np.int64), k_min, width, skip, total


def row_rice_encode(bits2d, k_rows, k_min, width, skip):
    """Stream of the table then the gaps with per-row Rice k: (words, n_bits)."""
    M, K = bits2d.shape
    kept = k_rows >= 0
    table_v = np.where(kept, k_rows - k_min + skip, 0)
    _, gaps, starts = ones_and_gaps(bits2d[kept])
    values, widths = golomb_fields(gaps, np.int64(1) << k_rows[kept][starts // max(K, 1)])
    all_v = np.concatenate([table_v, values.reshape(-1)])
    all_w = np.concatenate([np.full(M, width, np.int64), widths.reshape(-1)])
    return write_fields(all_v, all_w)


def read_row_table(words, n_bits, M, k_min, width, skip):
    """Per-row k (M,), -1 for empty rows, from the first M * width bits."""
    if not 0 <= width <= MAX_WIDTH or not 0 <= k_min < RICE_KS.size or skip not in (0, 1):
        raise ValueError(f"bad per-row Rice header: k_min={k_min}, width={width}, skip={skip}")
    if M * width > n_bits:
        raise ValueError(f"stream truncated: per-row table needs {M * width} bits, {n_bits} present")
    v = (bits_from_words(words, M * width).reshape(M, width).astype(np.int64) << np.arange(width)).sum(1)
    k_rows = np.where((v == 0) & bool(skip), -1, k_min + v - skip)
    if np.any(k_rows > RICE_KS[-1]):
        raise ValueError(f"per-row Rice parameter {k_rows.max()} exceeds {RICE_KS[-1]}")
    return k_rows


def loop_args(row_m):
    """(row_m, row_b, row_t) int64 arrays for :func:`golomb.golomb_loop`."""
    row_m = np.asarray(row_m, np.int64)
    b, t, _ = _params(row_m)
    return row_m, b, t


def row_rice_decode(words, n_bits, M, K, k_min, width, skip):
    """Inverse of :func:`row_rice_encode`: bool array (M*K,)."""
    words = check_stream(words, n_bits)
    k_rows = read_row_table(words, n_bits, M, k_min, width, skip)
    kept = k_rows >= 0
    n_kept = int(kept.sum()) * K
    row_m, b, t = loop_args(np.int64(1) << np.maximum(k_rows[kept], 0))
    flat = np.zeros(n_kept, bool)
    if row_m.size:
        _, status, _ = golomb_loop(words, int(n_bits), M * width, 0, n_kept, n_kept, row_m, b, t,
                                   max(K, 1), 0, flat)
    else:
        status = 3 if n_bits > M * width else 0
    if status:
        raise ValueError(f"corrupt per-row Rice stream: {ERRORS[status]}")
    out = np.zeros((M, K), bool)
    out[kept] = flat.reshape(-1, K)
    if skip and not out[kept].any(1).all():
        raise ValueError("corrupt per-row Rice stream: a row marked non-empty has no ones")
    return out.reshape(-1)


def build_row_index(bits2d, row_m, table_bits=0):
    """Entry points (offsets (M,), carries (M,)) of a gap stream with ``row_m`` (M,).

    offsets[r] = bit offset of the codeword of the first one >= r K (n_bits
    if none), carries[r] = r K - start of that gap (0 if none).
    """
    M, K = bits2d.shape
    x, gaps, starts = ones_and_gaps(bits2d)
    lengths = golomb_lengths(gaps, np.asarray(row_m, np.int64)[starts // max(K, 1)])
    cw_start = table_bits + np.concatenate(([0], np.cumsum(lengths)))
    first = np.searchsorted(x, np.arange(M) * K)
    offsets = cw_start[first]
    carries = np.where(first < x.size, np.arange(M) * K - np.append(starts, 0)[first], 0)
    return offsets.astype(np.int64), carries.astype(np.int64)


def row_index_bits(offsets, carries, n_bits):
    """Bits to store an index: M' * (bit_length(n_bits) + bit_length(max carry)) + 2 bytes of widths."""
    w_off = int(bit_length(n_bits))
    w_car = int(bit_length(carries.max())) if carries.size else 0
    return offsets.size * (w_off + w_car) + 16


def decode_rows(words, n_bits, M, K, row_m, offsets, carries, r0, r1):
    """Decode (kept) rows r0..r1-1 alone from the index: bool (r1 - r0, K)."""
    if not 0 <= r0 <= r1 <= M:
        raise ValueError(f"row range {r0}..{r1} outside 0..{M}")
    words = check_stream(words, n_bits)
    row_m, b, t = loop_args(row_m)
    out = np.zeros((r1 - r0) * K, bool)
    if r1 > r0:
        s = r0 * K - int(carries[r0])
        _, status, _ = golomb_loop(words, int(n_bits), int(offsets[r0]), s, r1 * K, M * K,
                                   row_m, b, t, max(K, 1), r0 * K, out)
        if status:
            raise ValueError(f"corrupt gap stream: {ERRORS[status]}")
    return out.reshape(r1 - r0, K)
