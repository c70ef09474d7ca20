"""Bit packing and popcount: the 64-bit words every packed kernel works on.

Conventions (shared by all packed kernels):

* A +-1 activation ``x`` is stored as the bit ``b = (x >= 0)`` (sign(0) = +1,
  NaN -> 0); a {0,1} weight is stored as is.
* Rows are packed little-endian within a word: element ``k`` of a row is bit
  ``k % 64`` of word ``k // 64`` (``uint64``), so a row of ``K`` elements takes
  ``n_words(K) = ceil(K / 64)`` words. Padding bits are always **zero**.
* Batch-sliced activations (:func:`pack_batch_sliced`) put the batch in the
  word instead: bit ``i`` of word ``xs[k, j]`` is the bit of sample
  ``64 j + i`` for input feature ``k``.

The NumPy functions are the reference. The Numba kernels (plain Python
functions, jitted on first use; numba is never imported when this module is)
must agree with them bit for bit. :func:`popcount64` is the popcount of one word
for kernel code: pure-Python SWAR arithmetic when run uncompiled, LLVM
``ctpop`` (``popcnt`` / ``vpopcntq``) once compiled.
"""

import importlib.util

import numpy as np

WORD_BITS = 64

# ----------------------------------------------------------------------------
# Sizes and NumPy packing (the reference)


def n_words(K):
    """Number of 64-bit words holding ``K`` bits: ``ceil(K / 64)``."""
    return (int(K) + WORD_BITS - 1) // WORD_BITS


def _pack_rows(bits):
    """Pack a ``(rows, K)`` boolean array into ``(rows, n_words(K))`` uint64."""
    rows, K = bits.shape
    padded = np.zeros((rows, n_words(K) * WORD_BITS), np.uint8)
    padded[:, :K] = bits
    bytes_ = np.packbits(padded, axis=1, bitorder="little")
    return bytes_.view("<u8").astype(np.uint64, copy=False).reshape(rows, -1)


def pack_bits(b):
    """Pack {0,1} (or bool) values, ``(rows, K) -> uint64 (rows, n_words(K))``.

    Used for {0,1} weights ``w01``. A 1-D input is treated as one row.
    """
    b = np.asarray(b)
    if b.ndim == 1:
        return pack_bits(b[None])[0]
    if b.dtype != np.bool_ and not np.isin(b, (0, 1)).all():
        raise ValueError("pack_bits expects values in {0, 1}")
    return _pack_rows(b.astype(bool))


def pack_signs_numpy(x):
    """NumPy reference of :func:`pack_signs`: bit ``(x >= 0)``."""
    x = np.asarray(x)
    if x.ndim == 1:
        return pack_signs_numpy(x[None])[0]
    return _pack_rows(x >= 0)


def unpack_bits(words, K):
    """Inverse of :func:`pack_bits`: ``uint64 (rows, n_words) -> uint8 (rows, K)``."""
    words = np.asarray(words, dtype=np.uint64)
    if words.ndim == 1:
        return unpack_bits(words[None], K)[0]
    bytes_ = np.ascontiguousarray(words.astype("<u8")).view(np.uint8)
    return np.unpackbits(bytes_, axis=1, bitorder="little")[:, :K]


def unpack_signs(words, K, dtype=np.float32):
    """Packed activation bits back to +-1 values of ``dtype``."""
    return (2 * unpack_bits(words, K).astype(np.int8) - 1).astype(dtype)


def pack_batch_sliced_numpy(x):
    """NumPy reference of :func:`pack_batch_sliced`.

    ``x`` float ``(B, K)`` -> uint64 ``(K, ceil(B / 64))`` with bit ``i`` of
    ``xs[k, j]`` = ``x[64 j + i, k] >= 0``; bits of missing samples are 0.
    """
    x = np.asarray(x)
    return _pack_rows((x >= 0).T)


def unpack_batch_sliced(xs, B):
    """Inverse of :func:`pack_batch_sliced` for the bits: ``uint8 (B, K)``."""
    return unpack_bits(xs, B).T


def popcount_numpy(words):
    """Popcount of every word (``np.bitwise_count``), as int64."""
    return np.bitwise_count(np.asarray(words, dtype=np.uint64)).astype(np.int64)


# ----------------------------------------------------------------------------
# Word helpers for kernel code. In Python they are plain arithmetic; once
# ``register_numba()`` ran, compiled kernels get the fast versions instead.

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)


def popcount64(x):
    """Number of set bits of a 64-bit word, as an int.

    Uncompiled this is the SWAR popcount below (pure arithmetic, no overflow,
    so it is exact on Python ints and NumPy uint64 alike). In compiled kernels
    it is the intrinsic ``llvm.ctpop.i64``, which LLVM lowers to ``popcnt`` and,
    in vectorised loops, to AVX-512 ``vpopcntq``.
    """
    x = np.uint64(x)
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    x = x + (x >> np.uint64(8))
    x = x + (x >> np.uint64(16))
    x = x + (x >> np.uint64(32))
    return int(x & np.uint64(0x7F))


def scratch(n, dtype):
    """A length-``n`` work buffer of ``dtype`` for kernel code (``n`` a constant).

    Uncompiled: a zeroed NumPy array. Compiled: uninitialised *stack* memory.
    A stack buffer cannot alias the kernel's input arrays, which is what lets
    LLVM keep its contents in vector registers; with a heap array it must
    assume that every store may change the inputs, so it reloads them, guards
    loops with run-time overlap checks or does not vectorise at all (measured
    here: the XNOR kernel runs 2x slower with a heap accumulator).
    """
    return np.zeros(n, dtype)


# ----------------------------------------------------------------------------
# Numba glue: availability, backend choice, jitted twins

_STATE = {}


def numba_available():
    """True when numba can be imported (it is not imported by this call)."""
    if "available" not in _STATE:
        _STATE["available"] = importlib.util.find_spec("numba") is not None
    return _STATE["available"]


def jit_disabled():
    """True under ``NUMBA_DISABLE_JIT=1`` (imports numba)."""
    import numba
    return bool(numba.config.DISABLE_JIT)


def resolve_backend(backend="auto"):
    """Map ``"auto" | "numba" | "numpy"`` to ``"numba"`` or ``"numpy"``.

    ``"auto"`` picks the compiled kernels when numba is installed and JIT is
    enabled, else the NumPy reference. ``"numba"`` runs the kernel code even
    under ``NUMBA_DISABLE_JIT=1`` (then uncompiled, as plain Python).
    """
    if backend == "numpy":
        return "numpy"
    if backend == "numba":
        if not numba_available():
            raise ImportError("backend='numba' needs numba, which is not installed")
        return "numba"
    if backend != "auto":
        raise ValueError("backend must be 'auto', 'numba' or 'numpy', got %r" % (backend,))
    return "numba" if numba_available() and not jit_disabled() else "numpy"


def _ctpop_intrinsic():
    """``numba.extending.intrinsic`` emitting ``llvm.ctpop.i64``; returns int64."""
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def ctpop64(typingctx, x):
        if not (isinstance(x, types.Integer) and x.bitwidth == 64):
            return None

        def codegen(context, builder, signature, args):
            fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
            return builder.call(fn, [args[0]])
        return types.int64(x), codegen

    return ctpop64


def _alloca_intrinsic():
    """Intrinsic returning a pointer to ``n`` elements of stack (``n`` literal)."""
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    @intrinsic
    def alloca(typingctx, n, dtype):
        if not isinstance(n, types.IntegerLiteral) or not isinstance(dtype, types.NumberClass):
            return None
        size, nbtype = n.literal_value, dtype.dtype

        def codegen(context, builder, signature, args):
            return cgutils.alloca_once(builder, context.get_data_type(nbtype), size=size)
        return types.CPointer(nbtype)(n, dtype), codegen

    return alloca


def register_numba():
    """Give :func:`popcount64` and :func:`scratch` their compiled versions.

    Idempotent; call it before compiling any kernel that uses them. If the
    ctpop intrinsic cannot be built, compiled code falls back to the SWAR
    arithmetic of :func:`popcount64` (which LLVM also recognises as popcount).
    """
    if _STATE.get("registered"):
        return
    import numba
    from numba.extending import overload

    try:
        ctpop64 = _ctpop_intrinsic()
        _STATE["popcount"] = "llvm.ctpop"
    except Exception:  # pragma: no cover - depends on the llvmlite build
        ctpop64 = numba.njit(popcount64)
        _STATE["popcount"] = "swar"
    alloca = _alloca_intrinsic()
    carray = numba.carray

    @overload(popcount64, inline="always")
    def _ol_popcount64(x):
        return lambda x: ctpop64(x)

    # inline="always" puts the alloca in the caller's frame, so the buffer
    # lives as long as the kernel that asked for it.
    @overload(scratch, inline="always", prefer_literal=True)
    def _ol_scratch(n, dtype):
        from numba import types
        if isinstance(n, types.IntegerLiteral):
            return lambda n, dtype: carray(alloca(n, dtype), (n,))
        return lambda n, dtype: np.zeros(n, dtype)

    _STATE["registered"] = True


def jit_kernel(fn, parallel=False):
    """The jitted twin of a plain-Python kernel ``fn`` (compiled lazily).

    ``cache=True`` always; no ``fastmath`` (integer kernels gain nothing, and
    ``x >= 0`` on NaN must stay False). Each serial/parallel variant must be
    its own Python function: with ``cache=True`` two dispatchers built from
    one function with different options can load each other's cache entry.
    A parallel kernel's module global ``prange`` is rebound to ``numba.prange``
    (which behaves as ``range`` when called from Python).
    """
    import numba
    register_numba()
    if parallel:
        fn.__globals__["prange"] = numba.prange
    return numba.njit(cache=True, parallel=parallel, fastmath=False, nogil=True)(fn)


def popcount_backend():
    """What compiled code uses for popcount: ``"llvm.ctpop"`` or ``"swar"``."""
    register_numba()
    return _STATE["popcount"]


def popcount_asm():
    """Assembly of a tiny jitted probe around :func:`popcount64`.

    Compiled without the cache (``inspect_asm`` is not available for cached
    code). ``python -m pysbnn.packed.bits`` prints its popcount lines and
    ``tests/test_packed_dense.py`` checks for ``popcnt``. On the AMD EPYC
    (Zen 5, AVX-512 VPOPCNTDQ) this was written on, numba 0.68 / LLVM 22 gave
    ``popcntq`` for the scalar tail and ``vpopcntq (mem), %zmm`` (4 per loop
    iteration) for the vectorised loop.
    """
    import numba
    register_numba()

    def _probe(words):
        total = 0
        for i in range(words.shape[0]):
            total += popcount64(words[i])
        return total

    probe = numba.njit(cache=False)(_probe)
    probe(np.zeros(8, np.uint64))
    return probe.inspect_asm(probe.signatures[0])


# ----------------------------------------------------------------------------
# Packing kernels (plain Python; jitted twins via _jit()). ``prange`` is the
# builtin range until jit_kernel rebinds it for the parallel variants.

prange = range


def _pack_signs_serial(x, out):
    """Sign-and-pack rows: ``out[r, w]`` bit ``t`` = ``x[r, 64 w + t] >= 0``."""
    rows, K = x.shape
    for r in range(rows):
        _pack_signs_row(x, out, r, K)


def _pack_signs_parallel(x, out):
    rows, K = x.shape
    for r in prange(rows):
        _pack_signs_row(x, out, r, K)


def _pack_signs_row(x, out, r, K):
    full = K // WORD_BITS
    for w in range(full):
        word = np.uint64(0)
        for t in range(WORD_BITS):
            if x[r, w * WORD_BITS + t] >= 0:
                word |= np.uint64(1) << np.uint64(t)
        out[r, w] = word
    if full < out.shape[1]:
        word = np.uint64(0)
        for t in range(K - full * WORD_BITS):
            if x[r, full * WORD_BITS + t] >= 0:
                word |= np.uint64(1) << np.uint64(t)
        out[r, full] = word


def _pack_batch_sliced_serial(x, out, buf):
    """``out[k, j]`` bit ``i`` = ``x[64 j + i, k] >= 0``; ``buf`` is (K,) uint64."""
    for j in range(out.shape[1]):
        _pack_batch_word(x, out, buf, j)


def _pack_batch_sliced_parallel(x, out, bufs):
    for j in prange(out.shape[1]):
        _pack_batch_word(x, out, bufs[j], j)


def _pack_batch_word(x, out, buf, j):
    B, K = x.shape
    for k in range(K):
        buf[k] = 0
    for i in range(min(WORD_BITS, B - j * WORD_BITS)):
        bit = np.uint64(1) << np.uint64(i)
        b = j * WORD_BITS + i
        for k in range(K):                      # contiguous: vectorises
            if x[b, k] >= 0:
                buf[k] |= bit
    for k in range(K):
        out[k, j] = buf[k]


_HELPERS = (_pack_signs_row, _pack_batch_word)
_KERNELS = {}


def _jit():
    """Compile (or load from cache) the packing kernels, once."""
    if not _KERNELS:
        from numba.extending import register_jitable
        register_numba()
        for fn in _HELPERS:
            register_jitable(fn)
        _KERNELS.update(
            signs=jit_kernel(_pack_signs_serial),
            signs_par=jit_kernel(_pack_signs_parallel, parallel=True),
            sliced=jit_kernel(_pack_batch_sliced_serial),
            sliced_par=jit_kernel(_pack_batch_sliced_parallel, parallel=True),
        )
    return _KERNELS


_PAR_MIN_ELEMENTS = 1 << 21      # serial packs ~20 elements/ns: threads pay off above ~100 us


def _as_float_rows(x):
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    return np.ascontiguousarray(x)


def pack_signs(x, backend="auto", parallel=None):
    """Sign-and-pack activations: float ``(rows, K)`` -> uint64 ``(rows, n_words(K))``.

    Bit ``k % 64`` of word ``k // 64`` is ``x[:, k] >= 0`` (sign(0) = +1);
    padding bits are 0. The Numba kernel avoids ``np.packbits``, which costs
    more than the GEMM itself at batch 1; it equals :func:`pack_signs_numpy`.
    """
    x = _as_float_rows(x)
    if x.ndim == 1:
        return pack_signs(x[None], backend, parallel)[0]
    if resolve_backend(backend) == "numpy":
        return pack_signs_numpy(x)
    out = np.zeros((x.shape[0], n_words(x.shape[1])), np.uint64)
    if parallel is None:
        parallel = x.size >= _PAR_MIN_ELEMENTS and x.shape[0] > 1
    _jit()["signs_par" if parallel else "signs"](x, out)
    return out


def pack_batch_sliced(x, backend="auto", parallel=None):
    """Batch-in-the-word packing: float ``(B, K)`` -> uint64 ``(K, ceil(B / 64))``.

    Bit ``i`` of ``xs[k, j]`` is ``x[64 j + i, k] >= 0``, so one word holds
    feature ``k`` of 64 samples; missing samples give 0 bits.
    """
    x = _as_float_rows(x)
    if resolve_backend(backend) == "numpy":
        return pack_batch_sliced_numpy(x)
    B, K = x.shape
    out = np.zeros((K, n_words(B)), np.uint64)
    if parallel is None:
        parallel = x.size >= _PAR_MIN_ELEMENTS and out.shape[1] > 1
    if parallel:
        _jit()["sliced_par"](x, out, np.zeros((out.shape[1], K), np.uint64))
    else:
        _jit()["sliced"](x, out, np.zeros(K, np.uint64))
    return out


if __name__ == "__main__":      # python -m pysbnn.packed.bits: check the popcount
    lines = [ln.strip() for ln in popcount_asm().splitlines() if "popcnt" in ln]
    print("compiled popcount64 uses %s; popcount instructions in the probe:" % popcount_backend())
    print("\n".join(sorted(set(lines))) or "none (no hardware popcount!)")
