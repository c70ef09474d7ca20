"""Sub-bit storage of binary ({0,1}) layer weights, near N h(p) bits (issue 11).

``encode_layer(w01)`` codes a layer with the smallest of: a bitmap, Golomb
gaps between the ones (one divisor per layer), per-row Rice parameters,
9-bit kernel codes (3x3 convs) and an exact enumerative code (tiny layers);
``decode_layer(enc, shape)`` inverts it exactly; ``to_bytes`` / ``from_bytes``
(de)serialise with a 16-byte header and a CRC. The format is in
``docs/format.md`` and :mod:`pysbnn.coding.layer`.
"""
from .layer import (
    METHODS,
    EncodedLayer,
    candidate_sizes,
    decode_layer,
    decode_rows,
    encode_layer,
    entropy_bound_bytes,
    from_bytes,
    row_index,
    stored_bytes,
    to_bytes,
)
from .golomb import rice_decode, rice_encode

__all__ = [
    "METHODS",
    "EncodedLayer",
    "candidate_sizes",
    "decode_layer",
    "decode_rows",
    "encode_layer",
    "entropy_bound_bytes",
    "from_bytes",
    "rice_decode",
    "rice_encode",
    "row_index",
    "stored_bytes",
    "to_bytes",
]
