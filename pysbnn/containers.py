"""Containers: :class:`Sequential` (layers one after the other) and
:class:`Residual` (``body(x) + shortcut(x)``).

A container's ``forward`` is a boundary: it checks ``x`` against what its
first layer takes (:meth:`~pysbnn.layers.Layer.check_input`), then runs its
children with ``_forward``, which checks nothing, so a nested container never
re-checks the activations it is handed.
"""

from .layers import Layer
from .validation import ANY


class Sequential(Layer):
    """Layers applied one after the other.

    ``forward(x, training=False)`` returns the last layer's output (the logits
    of a classifier); ``backward(dout)`` runs the layers in reverse;
    ``predict(x)`` returns class ids.
    """

    def __init__(self, layers):
        super().__init__()
        layers = list(layers)
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is {type(layer).__name__}, not a pysbnn Layer")
        self.layers = layers

    def children(self):
        return self.layers

    @classmethod
    def build(cls, config, children):
        return cls(children)

    def forward(self, x, training=False):
        return self._forward(self.check_input(x), training)

    def _forward(self, x, training=False):
        for layer in self.layers:
            x = layer._forward(x, training=training)
        return x

    def input_spec(self, after=None):
        for layer in reversed(self.layers):
            after = layer.input_spec(after)
        return after or ANY

    def output_features(self, features_in=None):
        for layer in self.layers:
            features_in = layer.output_features(features_in)
        return features_in

    def backward(self, dout):
        for layer in reversed(self.layers):
            dout = layer.backward(dout)
        return dout

    def backward_params(self, dout):
        """Backward through the layers until the first one holding parameters, which
        computes only its parameter gradients; the layers in front of it are skipped."""
        first = next((i for i, layer in enumerate(self.layers)
                      if next(layer.named_parameters(), None) is not None), None)
        if first is None:
            return
        for layer in reversed(self.layers[first + 1:]):
            dout = layer.backward(dout)
        self.layers[first].backward_params(dout)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __repr__(self):
        inner = "\n".join(f"  ({i}) " + repr(l).replace("\n", "\n  ") for i, l in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"


class Residual(Layer):
    """``out = body(x) + shortcut(x)``; the shortcut is the identity when None."""

    def __init__(self, body, shortcut=None):
        super().__init__()
        self.body = body
        self.shortcut = shortcut

    def children(self):
        return [self.body] + ([self.shortcut] if self.shortcut is not None else [])

    def forward(self, x, training=False):
        return self._forward(self.check_input(x), training)

    def input_spec(self, after=None):
        return self.body.input_spec(after)

    def output_features(self, features_in=None):
        return self.body.output_features(features_in)

    def _forward(self, x, training=False):
        out = self.body._forward(x, training=training)
        skip = x if self.shortcut is None else self.shortcut._forward(x, training=training)
        if out.shape != skip.shape:
            raise ValueError(f"Residual: body gives {out.shape} but shortcut gives {skip.shape}")
        return out + skip

    def backward(self, dout):
        dx = self.body.backward(dout)
        return dx + (dout if self.shortcut is None else self.shortcut.backward(dout))

    def backward_params(self, dout):
        self.body.backward_params(dout)
        if self.shortcut is not None:
            self.shortcut.backward_params(dout)
