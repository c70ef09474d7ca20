"""The residual stream between fused ResNet units, 64 images per word (:mod:`pysbnn.kernels.lanes`)."""

import numpy as np

from ..kernels import lanes


class LaneStream:
    """Float activations of a batch in lane groups, with the sign planes the next unit reads.

    ``h``: float32 (G, C, H W, 64), image ``64 g + j`` at ``[g, :, :, j]``
    (lanes past ``n`` are padding); ``planes``, ``sums``: the sign planes and
    sign sums per position of ``h`` (:func:`pysbnn.kernels.lanes.pack_lanes`),
    or None until :meth:`packed` computes them. A unit whose consumer is
    another unit emits them with its output; any other layer sees the NHWC
    array (``np.asarray(stream)`` or :meth:`nhwc`).
    """

    def __init__(self, h, n, H, W, planes=None, sums=None):
        self.h, self.n, self.H, self.W, self.planes, self.sums = h, int(n), int(H), int(W), planes, sums

    @classmethod
    def from_nhwc(cls, x, backend="auto"):
        """A stream holding the NHWC array ``x`` (n, H, W, C)."""
        n, H, W, _ = np.shape(x)
        return cls(lanes.to_lanes(x, backend), n, H, W)

    def __len__(self):
        return self.n

    @property
    def shape(self):
        return (self.n, self.H, self.W, self.h.shape[1])

    def packed(self, backend="auto"):
        """``(planes, sums)`` of the stream, packed on first use."""
        if self.planes is None:
            self.planes, self.sums = lanes.pack_lanes(self.h, self.H, self.W, backend)
        return self.planes, self.sums

    def nhwc(self, backend="auto"):
        """The activations as a new float32 NHWC array (n, H, W, C)."""
        return lanes.from_lanes(self.h, self.n, self.H, self.W, backend)

    def __array__(self, dtype=None, copy=None):
        out = self.nhwc()
        return out if dtype is None else out.astype(dtype)
