"""The kernel floor: bit packing, popcount and every compiled kernel, each
beside its NumPy reference. Training (``pysbnn.binary``, ``pysbnn.functional``)
and inference (``pysbnn.packed``) both import from here; nothing here imports
them.

One file per algorithm, holding its weight layout, its plain-Python body, the
jitted twin of that body and the NumPy reference that validates it:

=================  =========================================================
``words``          64-bit words: packing signs / {0,1} bits / batch-sliced
                   rows, unpacking, popcount (the only home of bit packing)
``xnor``           dense BNN GEMM, ``z = K - 2 popcount(a ^ w)``: a
                   popcount per word (AVX-512) or carry-save counting (AVX2)
``sliced``         SBNN GEMM, batch in the word, carry-save counters
``wordskip``       SBNN GEMM skipping all-zero weight words
``conv_layout``    3x3-conv geometry and the two packed activation layouts
``conv_bnn``       Kernel A: dense BNN 3x3 conv (XOR + popcount of pixel words)
``conv_sbnn``      Kernel B: SBNN 3x3 conv (K0 skipped, K1 a shifted copy)
``conv_sbnn_simd`` Kernel B's word helpers and their LLVM IR twins
``lanes``          the batch in the word: 64-image lanes of the ResNet
                   stream, their sign planes, sign sums, stride-2 phases
``conv_lanes``     Kernel B on lanes fused with a whole IR-Net unit
                   (Eq. 20, BatchNorm, residual, HardTanh, next planes)
``im2col``         the patch copies of training convolutions
``jit``            backends (``"auto" | "numba" | "numpy"``), the host CPU's
                   features, and the one registry that compiles the twins
                   on first use
``intrinsics``     ``popcount64`` / ``scratch`` and their LLVM intrinsics
``vec4``           the ``u64x4`` register type of the carry-save XNOR kernel
=================  =========================================================

Conventions shared by every kernel (``docs/conventions.md``):

* a +-1 activation ``x`` is the bit ``b = (x >= 0)`` (``sign(0) = +1``; NaN
  gives 0); a {0,1} weight is stored as is;
* rows are packed little-endian: element ``k`` is bit ``k % 64`` of word
  ``k // 64`` (``uint64``); padding bits are always zero;
* batch-sliced activations put the batch in the word: bit ``i`` of
  ``xs[k, j]`` is feature ``k`` of sample ``64 j + i``.

Numba is imported lazily, by the first call that needs a compiled kernel,
never by ``import pysbnn.kernels``. Operation counts that kernels record while
they run are compared with the analytic counts of :mod:`pysbnn.analysis`.
"""
