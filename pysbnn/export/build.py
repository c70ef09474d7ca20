"""Build and run an exported model on the host and on a Cortex-M4 under QEMU, and measure it.

The drivers and the bare-metal runtime are in ``pysbnn/export/mcu/``:
``main_host.c`` (stdio), and ``startup.c`` + ``semihost.c`` + ``main_mcu.c`` +
``link.ld`` for an image that ``qemu-system-arm -M mps2-an386`` runs with
semihosting (reading the images from a host file, printing the predictions,
the painted-stack high-water mark and timer ticks)::

    exe = build_host([export.source], out)             # strict C99, -O2
    elf = build_mcu([export.source], out)              # -mcpu=cortex-m4 -mthumb -Os
    run_host(exe, images)  -> predictions (and logits with classes=)
    run_mcu(elf, images)   -> (predictions, stack bytes of one predict call)
    instructions_per_image(exe, images)                # valgrind callgrind, x86
    stack_estimate(source, out)                        # gcc -fstack-usage

Every function raises :class:`ToolMissingError` (with the ``apt-get`` line)
when its tool is missing; :func:`missing_tools` gives the reason for a skip.
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from . import elf

MCU_DIR = Path(__file__).resolve().parent / "mcu"
HOST_CC = os.environ.get("CC") or "cc"
HOST_CFLAGS = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O2"]
MCU_CC = "arm-none-eabi-gcc"
MCU_CFLAGS = ["-mcpu=cortex-m4", "-mthumb", "-Os", "-std=c99", "-Wall", "-Wextra", "-Werror",
              "-pedantic", "-ffunction-sections", "-fdata-sections", "-g"]
# No --specs=nosys.specs: a model calling printf or malloc must fail to link.
MCU_LDFLAGS = ["-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections"]
MCU_RUNTIME = ["startup.c", "semihost.c", "main_mcu.c"]
QEMU = "qemu-system-arm"
QEMU_MACHINE = ["-M", "mps2-an386", "-cpu", "cortex-m4"]
# -icount shift=0: one guest instruction = 1 ns of virtual time; the 25 MHz
# timer of main_mcu.c then ticks once per 40 instructions.
QEMU_ICOUNT = ["-icount", "shift=0"]
INSNS_PER_TICK = 40
VALGRIND = "valgrind"

#: what exported C may import: <string.h> basics and compiler helpers
ALLOWED_IMPORTS = {"memcpy", "memset", "memmove", "memcmp"}
ALLOWED_IMPORT_PREFIXES = ("__aeabi_", "__popcount", "__clz", "__ctz")

EXIT_MEANING = {
    1: "usage error, QEMU error, or plain SYS_EXIT with a failure reason",
    2: "startup self-check failed: .data not copied or .bss not zeroed",
    3: "cannot open the image file", 4: "image file size is not a multiple of the image size",
    5: "short read of the image file", 7: "stack overflow: the whole stack region was used",
    130: "NMI", 131: "HardFault", 132: "MemManage fault (MPU/XN)",
    133: "BusFault (access to unmapped memory?)",
    134: "UsageFault (undefined instruction, divide by zero, ...)",
}
_INSTALL = {"host_cc": "apt-get install gcc", "mcu_cc": "apt-get install gcc-arm-none-eabi",
            "newlib": "apt-get install libnewlib-arm-none-eabi",
            "qemu": "apt-get install qemu-system-arm", "valgrind": "apt-get install valgrind"}


class BuildError(RuntimeError):
    """The compiler or linker failed, or the code imports what it must not."""


class ToolMissingError(BuildError):
    """A compiler, emulator or counter is not installed."""


class RunError(RuntimeError):
    """A program exited badly, timed out or printed something unexpected."""


# ------------------------------------------------------------------ tools

def tools_available():
    """{host_cc, mcu_cc, newlib, qemu, valgrind: path or None}."""
    tools = {"host_cc": shutil.which(HOST_CC), "mcu_cc": shutil.which(MCU_CC), "newlib": None,
             "qemu": shutil.which(QEMU), "valgrind": shutil.which(VALGRIND)}
    if tools["mcu_cc"]:
        out = subprocess.run([tools["mcu_cc"], "-print-file-name=libc_nano.a"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
        if Path(out).is_absolute() and Path(out).exists():   # else it prints the bare name
            tools["newlib"] = out
    return tools


def missing_tools(*names):
    """A reason naming the missing tools among ``names`` (with apt-get hints), or None."""
    have = tools_available()
    lost = [n for n in names if not have[n]]
    return "missing: " + "; ".join(f"{n} ({_INSTALL[n]})" for n in lost) if lost else None


def _require(*names):
    reason = missing_tools(*names)
    if reason:
        raise ToolMissingError(reason)


# ------------------------------------------------------------------ build

def _compile(cmd, what):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{what} build timed out: {' '.join(cmd)}") from exc
    if proc.returncode != 0:
        raise BuildError(f"{what} build failed ({proc.returncode}):\n  {' '.join(cmd)}\n"
                         f"{proc.stdout}{proc.stderr}")


def _sources(c_files):
    files = [Path(f).resolve() for f in c_files]
    for f in files:
        if not f.is_file():
            raise BuildError(f"no such source file: {f}")
    includes = sorted({str(f.parent) for f in files} | {str(MCU_DIR)})
    return [str(f) for f in files], [f"-I{d}" for d in includes]


def _model_defines(model, inputs, classes=None):
    out = [f"-DMODEL_PREDICT={model}_predict", f"-DMODEL_INPUTS={int(inputs)}u"]
    if classes:
        out += [f"-DMODEL_LOGITS={model}_logits", f"-DMODEL_CLASSES={int(classes)}"]
    return out


def _dir(out_dir):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return out_dir


def build_host(c_files, out_dir, model="sbnn", inputs=784, classes=None, exe="model_host",
               extra_cflags=()):
    """Compile the model's C files with ``main_host.c`` (strict C99, -O2); the executable.
    With ``classes`` the driver also prints the logits of every image."""
    _require("host_cc")
    srcs, incs = _sources(c_files)
    path = _dir(out_dir) / exe
    _compile([HOST_CC, *HOST_CFLAGS, *extra_cflags, *incs, *_model_defines(model, inputs, classes),
              "-o", str(path), str(MCU_DIR / "main_host.c"), *srcs], "host")
    return path


def build_mcu(c_files, out_dir, model="sbnn", inputs=784, name="model_mcu", stack_size=None,
              extra_cflags=()):
    """Cross-compile the model's C files into a Cortex-M4 image for QEMU mps2-an386
    (and ``<name>.map``); ``stack_size`` overrides link.ld's 8 KiB stack region."""
    _require("mcu_cc", "newlib")
    out_dir = _dir(out_dir)
    srcs, incs = _sources(c_files)
    image = out_dir / f"{name}.elf"
    ld = [*MCU_LDFLAGS, "-T", str(MCU_DIR / "link.ld"), f"-Wl,-Map={out_dir / (name + '.map')}"]
    if stack_size is not None:
        ld.append(f"-Wl,--defsym=__stack_size={int(stack_size)}")
    _compile([MCU_CC, *MCU_CFLAGS, *extra_cflags, *incs, *_model_defines(model, inputs), *ld,
              "-o", str(image), *[str(MCU_DIR / f) for f in MCU_RUNTIME], *srcs], "MCU")
    return image


def compile_object(c_file, out_dir, target="mcu", extra_cflags=()):
    """One C file compiled alone to an object with the build's flags (and -fstack-usage:
    a ``.su`` file next to it); ``elf.sizes`` of it is the file's own flash and RAM."""
    if target not in ("mcu", "host"):
        raise ValueError(f"target must be 'mcu' or 'host', not {target!r}")
    _require("mcu_cc" if target == "mcu" else "host_cc")
    srcs, incs = _sources([c_file])
    obj = _dir(out_dir) / (Path(c_file).stem + f".{target}.o")
    cc, flags = (MCU_CC, MCU_CFLAGS) if target == "mcu" else (HOST_CC, HOST_CFLAGS)
    _compile([cc, *flags, "-fstack-usage", *extra_cflags, *incs, "-c", "-o", str(obj), *srcs], target)
    return obj


def stack_estimate(obj):
    """Stack bytes from the ``.su`` file of :func:`compile_object`: the sum over every
    function of the file (no recursion, so the deepest call chain uses at most that)."""
    su = Path(obj).with_suffix(".su")
    total = 0
    for line in su.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 3:
            total += int(fields[1])
    return total


def check_imports(obj):
    """The object's imports; BuildError if any is beyond <string.h> and compiler helpers."""
    names = elf.undefined_symbols(obj)
    bad = [n for n in names if n not in ALLOWED_IMPORTS and not n.startswith(ALLOWED_IMPORT_PREFIXES)]
    if bad:
        raise BuildError(f"{obj} imports symbols beyond <string.h>: {', '.join(bad)}")
    return names


# ------------------------------------------------------------------ run

def as_images(images_u8, inputs=784):
    """uint8 images (n, inputs) in C order; ValueError for anything else."""
    x = np.asarray(images_u8)
    if x.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {x.dtype}")
    if x.size % inputs or (x.ndim > 1 and x.shape[0] * inputs != x.size):
        raise ValueError(f"images must have {inputs} pixels each, got shape {x.shape}")
    return np.ascontiguousarray(x).reshape(-1, inputs)


def _run(cmd, timeout, cwd, what):
    try:
        return subprocess.run(cmd, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:  # run() has killed the child
        raise RunError(f"{what} timed out after {timeout} s (killed): {' '.join(cmd)}") from exc


def parse_output(text, n, what, classes=None):
    """The drivers' output: ``N n``, n result lines, ``KEY value`` lines, ``DONE``.
    Returns (predictions, logits or None, {KEY: int})."""
    lines = text.splitlines()
    if not lines or lines[0] != f"N {n}":
        raise RunError(f"{what}: expected first line 'N {n}', got output:\n{text[-2000:]}")
    rows = [line.split() for line in lines[1:1 + n]]
    try:
        preds = np.array([int(r[0]) for r in rows], dtype=np.int64)
        logits = np.array([[float(v) for v in r[1:]] for r in rows], np.float32) if classes else None
    except (ValueError, IndexError) as exc:
        raise RunError(f"{what}: bad result line: {exc}\n{text[-2000:]}") from exc
    if len(preds) != n or (classes and logits.shape != (n, classes)):
        raise RunError(f"{what}: {len(preds)} result lines for {n} images")
    rest = lines[1 + n:]
    if not rest or rest[-1] != "DONE":
        raise RunError(f"{what}: output does not end with DONE:\n{text[-2000:]}")
    info = {}
    for line in rest[:-1]:
        key, _, value = line.partition(" ")
        try:
            info[key] = int(value)
        except ValueError:
            raise RunError(f"{what}: unexpected line {line!r}\n{text[-2000:]}") from None
    return preds, logits, info


def run_host(exe, images_u8, inputs=784, classes=None, timeout=120):
    """Run a :func:`build_host` executable: predictions, or (predictions, logits) with classes."""
    x = as_images(images_u8, inputs)
    with tempfile.TemporaryDirectory(prefix="sbnn_host_") as tmp:
        x.tofile(Path(tmp) / "images.bin")
        proc = _run([str(Path(exe).resolve()), "images.bin"], timeout, tmp, "host run")
    if proc.returncode != 0:
        raise RunError(f"host run exited {proc.returncode} "
                       f"({EXIT_MEANING.get(proc.returncode, 'unknown')}):\n{proc.stderr[-2000:]}")
    preds, logits, _ = parse_output(proc.stdout, len(x), "host run", classes)
    return (preds, logits) if classes else preds


def qemu_command(image, image_file="images.bin", console_file=None, icount=True):
    """The qemu-system-arm command line for a :func:`build_mcu` image (semihosting output
    to ``console_file`` if given, else to QEMU's stderr)."""
    cfg = f"enable=on,target=native,arg=firmware,arg={image_file}"   # a value ends at a comma
    cmd = [QEMU, *QEMU_MACHINE, "-nographic", "-monitor", "none", "-serial", "null"]
    cmd += QEMU_ICOUNT if icount else []
    if console_file is not None:
        cmd += ["-chardev", f"file,id=shcon,path={console_file}"]
        cfg += ",chardev=shcon"
    return cmd + ["-semihosting-config", cfg, "-kernel", str(Path(image).resolve())]


def run_mcu(image, images_u8, inputs=784, timeout=300, info=None):
    """Run a :func:`build_mcu` image under QEMU: (predictions, stack bytes of the deepest
    predict call). ``info`` (a dict) also gets stack_total, stack_size, seconds and
    mcu_instructions_per_image (Thumb-2 instructions in predict, +-40; not cycles)."""
    _require("qemu")
    x = as_images(images_u8, inputs)
    with tempfile.TemporaryDirectory(prefix="sbnn_qemu_") as tmp:
        x.tofile(Path(tmp) / "images.bin")
        console = Path(tmp) / "console.txt"
        cmd = qemu_command(image, "images.bin", console)
        t0 = time.perf_counter()
        proc = _run(cmd, timeout, tmp, "QEMU run")
        seconds = time.perf_counter() - t0
        out = console.read_text() if console.exists() else ""
    if proc.returncode != 0:
        raise RunError(f"QEMU run exited {proc.returncode} "
                       f"({EXIT_MEANING.get(proc.returncode, 'unknown')})\n  {' '.join(cmd)}\n"
                       f"console tail:\n{out[-1000:]}\nqemu stderr:\n{proc.stderr[-1000:]}")
    preds, _, keys = parse_output(out, len(x), "QEMU run")
    for key in ("STACK_PREDICT", "STACK_TOTAL", "STACK_SIZE", "TICKS_PREDICT"):
        if key not in keys:
            raise RunError(f"QEMU run: no {key} line in the output")
    if info is not None:
        info.update(stack_total=keys["STACK_TOTAL"], stack_size=keys["STACK_SIZE"], seconds=seconds)
        if len(x):
            info["mcu_instructions_per_image"] = keys["TICKS_PREDICT"] * INSNS_PER_TICK / len(x)
    return preds, keys["STACK_PREDICT"]


def instructions_per_image(exe, images_u8, model="sbnn", inputs=784, timeout=600):
    """x86 instructions executed inside ``<model>_predict`` per image, counted by valgrind
    callgrind (collection on only while it runs): the same count on every run."""
    _require("valgrind")
    x = as_images(images_u8, inputs)
    if len(x) == 0:
        raise ValueError("need at least one image")
    with tempfile.TemporaryDirectory(prefix="sbnn_cg_") as tmp:
        x.tofile(Path(tmp) / "images.bin")
        cg_out = Path(tmp) / "callgrind.out"
        cmd = [VALGRIND, "--tool=callgrind", f"--callgrind-out-file={cg_out}", "--collect-atstart=no",
               f"--toggle-collect={model}_predict", str(Path(exe).resolve()), "images.bin"]
        proc = _run(cmd, timeout, tmp, "valgrind")
        if proc.returncode != 0:
            raise RunError(f"valgrind run exited {proc.returncode}:\n{proc.stderr[-2000:]}")
        totals = [line for line in cg_out.read_text().splitlines()
                  if line.startswith(("totals:", "summary:"))]
    if not totals or int(totals[0].split()[1]) == 0:
        raise RunError(f"callgrind counted nothing: is {model}_predict in {exe}?")
    return int(totals[0].split()[1]) / len(x)
