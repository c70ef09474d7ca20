"""``export_c``: a packed SBNN MLP as dependency-free C99 (``<name>.h``, ``<name>.c``).

The C file holds the {0,1} weights of every layer as ``const`` tables (in
flash on a microcontroller) in the form :mod:`pysbnn.export.plan` chose, the
folded integer thresholds (:mod:`pysbnn.kernels.threshold`), the float affine
of the last layer and static scratch buffers sized here; the kernels come
from the template ``pysbnn/export/mcu/sbnn_kernels.c``. It computes exactly
what :class:`~pysbnn.packed.pack.PackedModel` computes: the same integers
``z'``, the same bits, and the logits in float32 (NumPy: float64, then
rounded), so the predictions are the packed model's.
"""

import os
import tempfile
from pathlib import Path
from typing import List, NamedTuple

from . import ctext
from .plan import LayerPlan, bitmap_words, plan_model

INPUT_TEXT = {"raw": "uint8 pixels", "bits": "bits"}


class Export(NamedTuple):
    """What :func:`export_c` wrote: the two files and the plan of every layer."""
    header: Path
    source: Path
    layers: List[LayerPlan]
    inputs: int
    classes: int


# ------------------------------------------------------------------ one layer

def _form_text(p):
    if p.form == "bitmap":
        return f"bitmap, {p.rows} rows of {bitmap_words(p.K)} uint32 words"
    if p.form == "golomb":
        text = f"golomb (m = {p.enc.params[0]})"
    else:
        k_min, width, skip = p.enc.params
        text = f"rice_rows (k_min = {k_min}, width = {width}, skip = {skip})"
    return text + (", coding 1 - w" if p.enc.complement else "") + ", decoded as it runs"


def _formula(p):
    if p.input == "raw":
        lines = ["z'_m = sum of the pixels under the ones of row m;  q = Q = sum of all pixels"]
    else:
        lines = ["z'_m = 2 (ones of row m whose input bit is set) - (ones of row m);",
                 f"q = 2 (input ones) - {p.K}"]
    if p.output == "bits":
        th = p.layer.threshold
        return lines + ["bit_m = dir_m u_F >= T_m,  u_F = z'_m 2^F + round(XI q / 2^(G - F)),",
                        f"F = {th.F}, G = {th.G}, XI = {th.XI} (xi = {p.layer.xi:.6g})"]
    return lines + ["logit_m = A_m z'_m + B_m q + C_m  (Eq. 20 with the folded BatchNorm, "
                    f"B = A xi, xi = {p.layer.xi:.6g})"]


def _layer_comment(p):
    out = "bits" if p.output == "bits" else "float logits"
    head = (f"---- l{p.index} (packed layer {p.name!r}): {p.K} -> {p.rows}, "
            f"{INPUT_TEXT[p.input]} in, {out} out ")
    return ctext.comment([head + "-" * max(0, 74 - len(head)),
                          f"ones: {p.ones:,} of {p.weights:,} weights ({100 * p.ones / p.weights:.2f} %)",
                          f"weights: {_form_text(p)};",
                          f"{p.weight_bytes:,} bytes of flash (h(p) bound {p.bound_bytes:,} bytes)",
                          *_formula(p)])


def _gap_code(p):
    enc, c = p.enc, f"l{p.index}"
    if p.form == "golomb":
        m = enc.params[0]
        b = (m - 1).bit_length()
        fields = [1, 0, 0, 0, m, b, (1 << b) - m, (1 << b) >> 1]
    else:
        k_min, width, skip = enc.params
        fields = [2, width, k_min, skip, 0, 0, 0, 0]
    method, width, k_min, skip, m, b, t, h = fields
    return (f"static const sbnn_gap_code {c}_code = {{\n"
            f"    {p.rows}u, {p.K}u, {enc.n_ones}u, /* rows, K, ones of the coded array */\n"
            f"    {method}, {int(enc.complement)}, {width}, {k_min}, {skip}, "
            f"/* method, complement, width, k_min, skip */\n"
            f"    {m}u, {b}u, {t}u, {h}u /* golomb m, b, t, h */\n}};\n")


def _layer_tables(p):
    c = f"l{p.index}"
    parts = [_layer_comment(p)]
    if p.form == "bitmap":
        parts.append(ctext.u32_table(f"{c}_words", p.words32()))
    else:
        parts += [ctext.u8_table(f"{c}_stream", p.stream()), _gap_code(p)]
    if p.output == "bits":
        th = p.layer.threshold
        parts += [ctext.int_table("int32_t", f"{c}_T", th.T, 8),
                  ctext.int_table("int8_t", f"{c}_dir", th.dir, 16),
                  f"static const sbnn_fixed {c}_fixed = {{{th.F}, {th.G}, {th.XI}}};\n"]
    else:
        aff = p.layer.affine
        parts += [ctext.float_table(f"{c}_A", aff.A), ctext.float_table(f"{c}_B", aff.A * aff.xi),
                  ctext.float_table(f"{c}_C", aff.C)]
    return "\n".join(parts)


def _layer_calls(p):
    """The statements that run layer p: z' into scratch_z, then its bits or the logits."""
    c = f"l{p.index}"
    src = "image" if p.input == "raw" else f"scratch_bits[{(p.index - 1) % 2}]"
    q = "(int32_t)Q" if p.input == "raw" else f"2 * (int32_t)ones - {p.K}"
    if p.form == "bitmap":
        kernel = f"bitmap_{p.input}({c}_words, {p.rows}u, {p.K}u, {src}, scratch_z);"
    else:
        args = f"{src}, 0" if p.input == "raw" else f"0, {src}"
        kernel = f"gaps_z({c}_stream, &{c}_code, {args}, {q}, scratch_z);"
    if p.output == "bits":
        out = (f"ones = threshold_bits(scratch_z, {p.rows}u, {q}, {c}_T, {c}_dir, &{c}_fixed,\n"
               f"                          scratch_bits[{p.index % 2}]);")
    else:
        out = f"affine_logits(scratch_z, {p.rows}u, {q}, {c}_A, {c}_B, {c}_C, logits);"
    return f"    /* l{p.index}: {p.K} -> {p.rows} */\n    {kernel}\n    {out}\n"


# ------------------------------------------------------------------ files

def render_header(name, inputs, classes):
    guard = name.upper() + "_H"
    return (f"/* {name}.h: an SBNN exported by pysbnn.export_c (generated: do not edit). */\n"
            f"#ifndef {guard}\n#define {guard}\n\n#include <stdint.h>\n\n"
            f"#define {name.upper()}_INPUTS {inputs}  /* uint8 pixels per image, row-major */\n"
            f"#define {name.upper()}_CLASSES {classes}\n\n"
            "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n"
            f"/* Class id (0 .. {classes - 1}) of one image: {inputs} raw uint8 pixels, "
            "row-major, as pysbnn.load_mnist returns them. */\n"
            f"int {name}_predict(const uint8_t *image);\n\n"
            f"/* The {classes} float logits of one image (predict is their first argmax). */\n"
            f"void {name}_logits(const uint8_t *image, float *logits);\n\n"
            "#ifdef __cplusplus\n}\n#endif\n\n"
            f"#endif /* {guard} */\n")


def _kernel_names(plans):
    names = {f"bitmap_{p.input}" if p.form == "bitmap" else "gaps" for p in plans}
    names.add("affine")
    if len(plans) > 1:
        names.add("threshold")
    return names


def _banner(name, plans, optimize, inputs, classes):
    from .. import __version__
    widths = " -> ".join([str(plans[0].K)] + [str(p.rows) for p in plans])
    ones, n = sum(p.ones for p in plans), sum(p.weights for p in plans)
    return ctext.comment([
        f"{name}.c: an SBNN exported by pysbnn {__version__} (pysbnn.export_c, "
        f"optimize=\"{optimize}\"); generated: do not edit.", "",
        f"Network {widths}: {len(plans)} binary layers, {ones:,} ones of {n:,} weights "
        f"({100 * ones / n:.2f} %);",
        f"binary weights in flash: {sum(p.weight_bytes for p in plans):,} bytes "
        f"(h(p) bound {sum(p.bound_bytes for p in plans):,} bytes).",
        f"int {name}_predict(const uint8_t *image): the class of {inputs} uint8 pixels;",
        f"void {name}_logits(const uint8_t *image, float *logits): its {classes} logits.",
        "C99; no dynamic memory; only <stdint.h> and <string.h>; integers only",
        "up to the last layer's affine (docs/mcu.md)."])


def _functions(name, plans, inputs, classes):
    bit_rows = [p.rows for p in plans if p.output == "bits"]
    scratch = (f"/* Scratch, sized at export: z' of the widest layer, the bits of two layers. */\n"
               f"static int32_t scratch_z[{max(p.rows for p in plans)}];\n")
    decl = "    uint32_t Q = 0u, i;\n"
    if bit_rows:
        scratch += f"static uint32_t scratch_bits[2][{max(bitmap_words(r) for r in bit_rows)}];\n"
        decl = "    uint32_t Q = 0u, i, ones;\n"
    body = "".join(_layer_calls(p) for p in plans)
    return (f"{scratch}\nvoid {name}_logits(const uint8_t *image, float *logits)\n{{\n{decl}"
            f"    for (i = 0u; i < {inputs}u; i++) {{\n        Q += image[i];\n    }}\n{body}}}\n\n"
            f"int {name}_predict(const uint8_t *image)\n{{\n    float logits[{classes}];\n"
            f"    int m, best = 0;\n    {name}_logits(image, logits);\n"
            f"    for (m = 1; m < {classes}; m++) {{\n"
            f"        if (logits[m] > logits[best]) {{\n            best = m;\n        }}\n    }}\n"
            f"    return best;\n}}\n")


def render_source(name, plans, optimize):
    inputs, classes = plans[0].K, plans[-1].rows
    return "\n".join([
        _banner(name, plans, optimize, inputs, classes),
        f"#include <stdint.h>\n#include <string.h>\n\n#include \"{name}.h\"\n",
        ctext.kernels_for(_kernel_names(plans)),
        *(_layer_tables(p) for p in plans),
        _functions(name, plans, inputs, classes)])


def _out_dir(out_dir):
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"export_c: cannot create the output directory {out_dir}: {e}") from None
    if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"export_c: the output directory {out_dir} is not writable")
    return path


def _write(path, text):
    """Write atomically: a temporary file in the same directory renamed into place."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        raise ValueError(f"export_c: cannot write {path}: {e}") from None


def export_c(packed_model, out_dir, name="sbnn", optimize="size", forms=None):
    """Write a packed MLP as C99: ``<out_dir>/<name>.h`` and ``<out_dir>/<name>.c``.

    Parameters
    ----------
    packed_model : :class:`~pysbnn.packed.pack.PackedModel` of a
        :func:`pysbnn.binary_mlp` (convolutional models: not supported yet).
    out_dir : directory for the two files (created if missing).
    name : C identifier prefixing ``<name>_predict`` / ``<name>_logits``.
    optimize : ``"size"`` (fewest flash bytes per layer) or ``"speed"`` (fewest
        instructions by the measured rule, :data:`pysbnn.export.plan.GAPS_MINUS_BITMAP`).
    forms : None, or one of ``"bitmap" "golomb" "rice_rows"`` for every layer or
        a list of one per layer, overriding the choice (benchmarks, tests).

    Returns
    -------
    :class:`Export`: the paths, the per-layer plans (forms, flash bytes, h(p)
    bounds), the number of inputs and of classes. Raises ValueError for a
    model it cannot export, a bad name or an unwritable directory.
    """
    ctext.check_name(name)
    plans = plan_model(packed_model, optimize, forms)
    out = _out_dir(out_dir)
    header, source = out / f"{name}.h", out / f"{name}.c"
    inputs, classes = plans[0].K, plans[-1].rows
    _write(header, render_header(name, inputs, classes))
    _write(source, render_source(name, plans, optimize))
    return Export(header, source, plans, inputs, classes)


def stored_weights(plans):
    """Total flash bytes of the binary weights and their h(p) bound."""
    return sum(p.weight_bytes for p in plans), sum(p.bound_bytes for p in plans)
