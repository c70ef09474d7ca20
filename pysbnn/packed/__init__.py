"""Bit-packed inference for binary and sparse binary layers.

``bits`` packs +-1 activations and {0,1} weights into 64-bit words,
``reference`` holds the NumPy kernels (the validators), ``dense_kernels`` and
``conv_kernels`` the Numba kernels. Numba is imported lazily, on the first call
that needs it, never by ``import pysbnn.packed``.
"""
