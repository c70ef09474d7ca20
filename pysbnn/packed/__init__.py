"""Bit-packed inference: ``pack(model)`` turns a trained model's binary layers
into {0,1} bits (``pack``), run by packed layers (``layers``) through one
kernel dispatch point (``dispatch``) on the kernels of :mod:`pysbnn.kernels`.
Numba is imported lazily, on the first call that needs it, never by
``import pysbnn.packed``.
"""
