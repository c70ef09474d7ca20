"""Tests of the entropy-bound weight coding (pytest + hypothesis)."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pysbnn.coding import bitio, enumcode, golomb, kernelcode

from pysbnn.coding.layer import (
    METHODS,
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
from pysbnn.coding.golomb import rice_decode, rice_encode

def sbnn_like_conv(shape, seed, k0=0.7, k1=0.2, patterns=(16, 186, 495, 56, 146)):
    """Conv weights with a skewed kernel-code histogram: K0 with prob k0, a K1
    (half of them the centre tap) with k1, else one of a few multi-tap ``patterns``."""
    rng = np.random.default_rng(seed)
    n = shape[0] * shape[1]
    k1_codes = np.where(rng.random(n) < 0.5, 16, 1 << rng.integers(0, 9, n))
    codes = np.select([rng.random(n) < k0 / (k0 + k1 + 1e-300), np.ones(n, bool)], [0, k1_codes])
    other = rng.random(n) >= k0 + k1
    codes[other] = rng.choice(patterns, other.sum())
    return kernelcode.kernel_bits(codes, shape[0], shape[1])


SMALL_SHAPES = [(1,), (63,), (64,), (65,), (128,), (2, 64), (5, 13), (1, 1, 3, 3), (3, 5, 3, 3),
                (7, 3, 3, 3), (4, 2, 5, 3)]
DENSITIES = [0.0, 1.0, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.3, 0.5, 0.7, 0.99]
SLOW = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def bernoulli(shape, p, seed):
    """i.i.d. Bernoulli(p) bool array."""
    return np.random.default_rng(seed).random(shape) < p


def special_arrays(n):
    """Edge cases of length n: no ones, all ones, one at the start / at the end, alternating."""
    out = [np.zeros(n, bool), np.ones(n, bool), np.eye(1, n, 0, bool)[0], np.eye(1, n, n - 1, bool)[0]]
    return out + [np.arange(n) % 2 == 1]


@pytest.fixture(params=["numba", "numpy"])
def backend(request, monkeypatch):
    """Run the decode loops compiled (numba) and as plain Python (their own reference)."""
    if request.param == "numpy":
        for twins in (golomb._TWINS, kernelcode._TWINS):
            monkeypatch.setattr(twins, "function", lambda name, backend="auto", _t=twins: _t.kernels[name])
    return request.param


# ---------------------------------------------------------------- bit streams

@given(st.lists(st.tuples(st.integers(0, 63), st.integers(0, 2 ** 63 - 1)), max_size=60))
def test_fields_round_trip_across_word_boundaries(fields):
    widths = [w for w, _ in fields]
    values = [v & ((1 << w) - 1) for w, v in fields]
    words, n_bits = bitio.write_fields(values, widths)
    assert n_bits == sum(widths) and words.dtype == np.uint64 and words.size == -(-n_bits // 64)
    reader = bitio.BitReader(words, n_bits)
    assert [reader.read(w) for w in widths] == values
    with pytest.raises(ValueError):
        reader.read(1)


def test_bit_order_is_little_endian_within_words():
    words, n_bits = bitio.words_from_bits(np.eye(1, 130, 65, bool)[0])
    assert n_bits == 130 and words.tolist() == [0, 2, 0]
    assert bitio.words_to_bytes(words, n_bits)[8] == 2


@pytest.mark.parametrize("q", [0, 1, 62, 63, 64, 65, 127, 128, 200])
@pytest.mark.parametrize("offset", [0, 1, 63])
def test_unary_spanning_zero_words(q, offset):
    w = bitio.BitWriter()
    w.write(0, offset)
    w.write_unary(q)
    w.write(5, 3)
    words, n_bits = w.finish()
    reader = bitio.BitReader(words, n_bits, offset)
    assert reader.read_unary() == q and reader.read(3) == 5
    assert bitio.read_unary(words, n_bits - 4, offset)[0] == -1     # the one bit cut off


def test_bytes_round_trip_and_padding_check():
    words, n_bits = bitio.words_from_bits(bernoulli(77, 0.5, 0))
    buf = bitio.words_to_bytes(words, n_bits)
    assert len(buf) == 10 and (bitio.words_from_bytes(buf, n_bits) == words).all()
    with pytest.raises(ValueError):
        bitio.words_from_bytes(buf[:-1], n_bits)
    with pytest.raises(ValueError):
        bitio.words_from_bytes(buf[:-1] + bytes([buf[-1] | 0x80]), n_bits)


# ---------------------------------------------------------------- Rice / Golomb

@pytest.mark.parametrize("n", [1, 63, 64, 65, 128, 1000])
@pytest.mark.parametrize("k", [0, 1, 3, 7, 12, 20])
def test_rice_round_trip_edge_cases(n, k, backend):
    for bits in special_arrays(n) + [bernoulli(n, p, n + k) for p in (1e-4, 0.01, 0.3)]:
        words, n_bits = rice_encode(bits, k)
        assert n_bits == golomb.rice_sizes(golomb.ones_and_gaps(bits)[1], [k])[0]
        assert (rice_decode(words, n_bits, n, k) == bits).all()


@given(st.integers(1, 300), st.integers(1, 5000), st.floats(0, 1), st.integers(0, 2 ** 31))
def test_golomb_round_trip_any_divisor(n, m, p, seed):
    bits = bernoulli(n, p, seed)
    words, n_bits = golomb.golomb_encode(bits, m)
    gaps = golomb.ones_and_gaps(bits)[1]
    assert n_bits == int(golomb.golomb_lengths(gaps, m).sum())
    assert (golomb.golomb_decode(words, n_bits, n, m) == bits).all()


def test_best_parameter_is_the_exact_minimum():
    gaps = golomb.ones_and_gaps(bernoulli(50000, 0.02, 1))[1]
    _, bits = golomb.best_rice_k(gaps)
    assert bits == min(rice_encode(bernoulli(50000, 0.02, 1), kk)[1] for kk in range(21))
    _, gbits = golomb.best_golomb_m(gaps)
    assert gbits <= bits and gbits == min(golomb.golomb_sizes(gaps, np.arange(1, 200)))


# ---------------------------------------------------------------- layers

@pytest.mark.parametrize("shape", SMALL_SHAPES)
@pytest.mark.parametrize("p", DENSITIES)
def test_encode_layer_round_trip(shape, p, backend):
    w = bernoulli(shape, p, hash((shape, p)) % 2 ** 32)
    enc = encode_layer(w)
    assert enc.method in METHODS and enc.words.dtype == np.uint64
    assert all(type(v) is int for v in (enc.n_ones, enc.n_bits, enc.crc, *enc.params))
    out = decode_layer(enc, shape)
    assert out.dtype == bool and out.shape == shape and (out == w).all()
    buf = to_bytes(enc)
    assert len(buf) == stored_bytes(enc)
    assert (decode_layer(from_bytes(buf), shape) == w).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(65,), (9, 7), (6, 5, 3, 3), (1, 64, 3, 3)])
def test_every_method_round_trips(method, shape, backend):
    for p in (0.0, 0.02, 0.3, 0.8, 1.0):
        w = bernoulli(shape, p, 7)
        if method == "kernel" and len(shape) != 4 or method == "rice_rows" and (len(shape) == 1 or shape[0] == 1):
            with pytest.raises(ValueError):
                encode_layer(w, methods=(method,))
            continue
        enc = encode_layer(w, methods=(method,))
        assert enc.method == method
        assert enc.n_bits == candidate_sizes(w, (method,))[method][1]   # the planner is exact
        assert (decode_layer(from_bytes(to_bytes(enc)), shape) == w).all()


@given(st.lists(st.integers(1, 9), min_size=1, max_size=3), st.sampled_from([0, 1, 2]),
       st.floats(0, 1), st.integers(0, 2 ** 31))
@SLOW
def test_round_trip_random_shapes(dims, conv, p, seed):
    shape = tuple(dims) + ((3, 3) if conv == 1 else ())
    w = bernoulli(shape, p ** 2, seed)
    assert (decode_layer(encode_layer(w), shape) == w).all()


def test_rows_with_different_densities_prefer_per_row_parameters():
    rng = np.random.default_rng(3)
    dens = np.where(np.arange(512) % 2, 0.002, 0.2)
    w = rng.random((512, 512)) < dens[:, None]
    sizes = candidate_sizes(w)
    assert sizes["rice_rows"][1] < sizes["golomb"][1]
    assert encode_layer(w).method == "rice_rows"


@pytest.mark.parametrize("method", ["golomb", "rice_rows"])
def test_row_index_decodes_any_row_range(method):
    rng = np.random.default_rng(4)
    w = rng.random((40, 100)) < np.linspace(0.0, 0.2, 40)[:, None]
    w[7] = False
    w[30:33] = False
    enc = encode_layer(w, methods=(method,))
    offsets, carries, cost = row_index(enc, w.shape)
    assert cost >= 40 * int(golomb.bit_length(enc.n_bits))
    for r0, r1 in [(0, 40), (0, 1), (7, 8), (8, 9), (29, 34), (39, 40), (5, 5)]:
        assert (decode_rows(enc, w.shape, offsets, carries, r0, r1) == w[r0:r1]).all()


def test_empty_rows_are_skipped():
    rng = np.random.default_rng(12)
    w = rng.random((256, 300)) < 0.03
    w[rng.random(256) < 0.6] = False
    enc = encode_layer(w)
    assert enc.method == "rice_rows" and enc.params[2] == 1
    assert stored_bytes(enc) < 0.9 * stored_bytes(encode_layer(w, methods=("golomb",)))
    assert (decode_layer(enc, w.shape) == w).all()
    offsets, carries, _ = row_index(enc, w.shape)
    assert offsets.size == w.any(1).sum()
    for r0, r1 in [(0, 256), (10, 200), (255, 256)]:
        assert (decode_rows(enc, w.shape, offsets, carries, r0, r1) == w[r0:r1]).all()
    w[:] = False
    w[3, 5] = True
    assert (decode_layer(encode_layer(w, methods=("rice_rows",)), w.shape) == w).all()


def test_kernel_coding_wins_on_skewed_histograms_only():
    w = sbnn_like_conv((64, 64, 3, 3), 5)
    sizes = candidate_sizes(w)
    enc = encode_layer(w)
    assert enc.method == "kernel" and sizes["kernel"][1] < 0.9 * sizes["golomb"][1]
    assert (decode_layer(enc, w.shape) == w).all()
    iid = bernoulli((64, 64, 3, 3), 0.05, 6)
    assert encode_layer(iid).method != "kernel"


def test_huffman_lengths_are_limited_and_canonical():
    counts = np.zeros(512, np.int64)
    counts[1:40] = (1.7 ** np.arange(39)).astype(np.int64) + 1   # Fibonacci-like: deep tree
    lengths = kernelcode.huffman_lengths(counts)
    assert lengths.max() <= kernelcode.LMAX and (lengths[1:40] > 0).all()
    assert np.sum(2.0 ** -lengths[1:40]) <= 1
    codes, *_ = kernelcode.canonical_codes(lengths)
    words = [format(codes[s], f"0{lengths[s]}b") for s in range(1, 40)]
    assert not any(a != b and b.startswith(a) for a in words for b in words)


def test_enum_code_never_exceeds_the_bound():
    for n, k in [(4096, 1), (4096, 4), (4096, 40), (1000, 300), (70, 35)]:
        assert enumcode.enum_bits(n, k) <= math.ceil(n * h(k / n))


# ---------------------------------------------------------------- size criterion

def h(p):
    """Binary entropy in bits."""
    return 0.0 if p in (0, 1) else -p * math.log2(p) - (1 - p) * math.log2(1 - p)


@given(st.sampled_from([(4096,), (64, 64), (512, 10), (100, 41), (16, 32, 3, 3), (8, 57, 3, 3),
                        (5000,), (20000,)]),
       st.floats(0.001, 0.3), st.integers(0, 2 ** 31))
@SLOW
def test_size_within_three_percent_of_entropy(shape, p, seed):
    w = bernoulli(shape, p, seed)
    p_hat = w.mean()
    assume(0.001 <= p_hat <= 0.3)
    size = stored_bytes(encode_layer(w))
    assert size <= 1.03 * entropy_bound_bytes(w) + 16
    assert size <= -(-w.size // 8) + 16


@pytest.mark.parametrize("p", [0.001, 0.3])
def test_size_criterion_at_n4096(p):
    for seed in range(50):
        w = bernoulli(4096, p, seed)
        if 0.001 <= w.mean() <= 0.3:
            assert stored_bytes(encode_layer(w)) <= 1.03 * entropy_bound_bytes(w) + 16


def test_never_larger_than_bitmap_plus_header():
    for p in (0.3, 0.45, 0.5, 0.55):
        w = bernoulli((512, 512), p, 8)
        assert stored_bytes(encode_layer(w)) <= 512 * 512 // 8 + 16


# ---------------------------------------------------------------- corrupt input

def encoded_examples():
    """(name, enc, shape) for every method, small enough for exhaustive checks."""
    out = []
    for method, shape, p in [("bitmap", (100,), 0.5), ("golomb", (300,), 0.05), ("golomb", (300,), 0.9),
                             ("rice_rows", (10, 40), 0.1), ("kernel", (8, 8, 3, 3), 0.05),
                             ("enum", (200,), 0.05)]:
        w = sbnn_like_conv(shape, 1) if method == "kernel" else bernoulli(shape, p, 2)
        out.append((method, encode_layer(w, methods=(method,)), shape))
    w = bernoulli((40, 30), 0.1, 3)
    w[bernoulli(40, 0.6, 4)] = False
    enc = encode_layer(w, methods=("rice_rows",))
    assert enc.params[2] == 1
    return out + [("rice_rows_skip", enc, w.shape)]


EXAMPLES = encoded_examples()


@pytest.mark.parametrize("name,enc,shape", EXAMPLES)
def test_truncated_or_extended_buffers_raise(name, enc, shape):
    buf = to_bytes(enc)
    for bad in (buf[:-1], buf[:10], buf + b"\0", b""):
        with pytest.raises(ValueError):
            decode_layer(from_bytes(bad), shape)


@pytest.mark.parametrize("name,enc,shape", EXAMPLES)
@given(data=st.data())
@settings(max_examples=40, deadline=None)
def test_bit_flips_are_detected(name, enc, shape, data):
    buf = bytearray(to_bytes(enc))
    flips = data.draw(st.sets(st.integers(0, len(buf) * 8 - 1), min_size=1, max_size=3))
    for f in flips:
        buf[f // 8] ^= 1 << (f % 8)
    with pytest.raises(ValueError):
        decode_layer(from_bytes(bytes(buf)), shape)


@pytest.mark.parametrize("name,enc,shape", EXAMPLES)
@given(data=st.data())
@settings(max_examples=80, deadline=None)
def test_corrupt_streams_without_crc_raise_only_value_error(name, enc, shape, data):
    words = enc.words.copy()
    n_bits = data.draw(st.integers(0, enc.n_bits + 64))
    words = np.concatenate([words, np.zeros(2, np.uint64)])
    for f in data.draw(st.lists(st.integers(0, words.size * 64 - 1), max_size=4)):
        words[f // 64] ^= np.uint64(1) << np.uint64(f % 64)
    n_ones = data.draw(st.sampled_from([enc.n_ones, enc.n_ones + 1, max(enc.n_ones - 1, 0)]))
    bad = enc._replace(words=words, n_bits=n_bits, n_ones=n_ones)
    try:
        out = decode_layer(bad, shape, check_crc=False)
    except ValueError:
        return
    assert out.shape == shape and out.dtype == bool and int((out ^ enc.complement).sum()) == n_ones


def test_specific_corruptions_raise_value_error():
    bits = np.zeros(200, bool)
    bits[[3, 50, 199]] = True
    words, n_bits = rice_encode(bits, 4)
    bad_calls = [
        lambda: rice_decode(words, n_bits - 1, 200, 4),            # runs past n_bits
        lambda: rice_decode(words, n_bits, 199, 4),                # gap beyond N
        lambda: rice_decode(words, n_bits + 5, 200, 4),            # bits after position N
        lambda: rice_decode(words, 10 ** 6, 200, 4),               # n_bits beyond the words
        lambda: rice_decode(words.astype(np.int32), n_bits, 200, 4),
        lambda: golomb.golomb_decode(words, n_bits, 200, 0),
    ]
    enc = encode_layer(bits, methods=("golomb",))
    bad_calls += [
        lambda: decode_layer(enc._replace(n_ones=201), (200,)),    # more ones than N
        lambda: decode_layer(enc._replace(n_ones=2), (200,), check_crc=False),
        lambda: decode_layer(enc._replace(params=()), (200,), check_crc=False),
        lambda: decode_layer(enc._replace(method="nope"), (200,)),
        lambda: decode_layer(enc, (100,)),                          # wrong shape: gap beyond N
        lambda: decode_layer(enc._replace(crc=enc.crc ^ 1), (200,)),
        lambda: decode_layer(encode_layer(bits, methods=("bitmap",)), (10, 21)),
        lambda: decode_layer(encode_layer(np.ones((2, 2, 3, 3)), methods=("kernel",)), (4, 9)),
        lambda: enumcode.enum_decode(*bitio.words_from_bits(np.ones(9, bool)), 12, 3),   # 8 bits due
        lambda: enumcode.enum_decode(*bitio.words_from_bits(np.ones(8, bool)), 12, 3),   # 255 >= C(12,3)
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            call()


# ---------------------------------------------------------------- C reference decoder

@pytest.fixture(scope="module")
def c_decoder(tmp_path_factory):
    """Build tools/gapdecode.c (skip when no C compiler is installed)."""
    import os
    import shutil
    import subprocess
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    exe = str(tmp_path_factory.mktemp("c") / "gapdecode")
    src = os.path.join(os.path.dirname(__file__), "c", "gapdecode.c")
    subprocess.run([cc, "-std=c99", "-O2", "-Wall", "-Werror", "-o", exe, src], check=True)
    return exe


def test_c_decoder_matches_python(c_decoder, tmp_path):
    import subprocess
    rng = np.random.default_rng(21)
    layers = [bernoulli((64, 100), 0.05, 1), bernoulli((64, 100), 0.8, 2), np.zeros((3, 65), bool),
              np.eye(5, 7, 2, dtype=bool), rng.random((128, 200)) < np.where(rng.random(128) < 0.5, 0, 0.1)[:, None],
              rng.random((64, 64)) < np.where(np.arange(64) % 2, 0.003, 0.3)[:, None]]
    for i, w in enumerate(layers):
        for method in ("golomb", "rice_rows"):
            enc = encode_layer(w, methods=(method,))
            path = tmp_path / f"l{i}{method}.bin"
            path.write_bytes(to_bytes(enc))
            out = subprocess.run([c_decoder, str(path), *map(str, w.shape)], capture_output=True, check=False)
            assert out.returncode == 0, out.stderr
            assert (np.frombuffer(out.stdout, np.uint8).reshape(w.shape) == w).all()
            bad = bytearray(to_bytes(enc))
            bad[-1] ^= 1                                  # last stream byte, or the CRC
            path.write_bytes(bytes(bad))
            assert subprocess.run([c_decoder, str(path), *map(str, w.shape)], capture_output=True, check=False).returncode == 2
