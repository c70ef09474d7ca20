"""Flash and RAM of compiled code, read from ELF section headers in pure Python.

Works on object files and linked images, 32 and 64 bit, either byte order, so
the sizes of an export need no binutils for the target. Only allocated
sections count:

* ``text``: executable; ``rodata``: read-only data (the weight tables, the
  vector table of an image); ``data``: initialised writable data (in flash
  *and* in RAM); ``bss``: zeroed RAM; ``stack`` / ``heap``: the reserved
  regions of a firmware image (``mcu/link.ld``).
* ``flash = text + rodata + data``, ``ram = data + bss (+ stack + heap)``.

On x86-64 a position-independent ``const`` table holding pointers lands in
``.data.rel.ro`` (writable until relocated): the export keeps pointers out
of its tables, so its read-only data is ``rodata`` on every target.
"""

import struct
from pathlib import Path

SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR = 0x1, 0x2, 0x4
SHT_SYMTAB, SHT_NOBITS = 2, 8

def _elf(path):
    """(data, byte order, is64, section headers (name, type, flags, addr, offset, size, link, ...))."""
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF":
        raise ValueError(f"{path} is not an ELF file")
    is64, end = data[4] == 2, "<" if data[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack_from(end + "Q", data, 0x28)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x3A)
        fmt = end + "IIQQQQIIQQ"
    else:
        shoff, = struct.unpack_from(end + "I", data, 0x20)
        shentsize, shnum = struct.unpack_from(end + "HH", data, 0x2E)
        fmt = end + "IIIIIIIIII"
    headers = [struct.unpack_from(fmt, data, shoff + i * shentsize) for i in range(shnum)]
    return data, end, is64, headers


def _cstr(data, off):
    return data[off:data.index(b"\0", off)].decode()


def sections(path):
    """[(name, type, flags, size)] of the sections of an ELF file."""
    data, end, is64, headers = _elf(path)
    shstrndx, = struct.unpack_from(end + "H", data, 0x3E if is64 else 0x32)
    str_off = headers[shstrndx][4]
    return [(_cstr(data, str_off + h[0]), h[1], h[2], h[5]) for h in headers[1:]]


def symbols(path):
    """[(name, size, section index)] of the symbol table (index 0: undefined)."""
    data, end, is64, headers = _elf(path)
    out = []
    for h in headers:
        if h[1] != SHT_SYMTAB:
            continue
        str_off = headers[h[6]][4]                  # sh_link: its string table
        entsize = 24 if is64 else 16
        for off in range(h[4] + entsize, h[4] + h[5], entsize):
            name_off, = struct.unpack_from(end + "I", data, off)
            if is64:
                shndx, = struct.unpack_from(end + "H", data, off + 6)
                size, = struct.unpack_from(end + "Q", data, off + 16)
            else:
                size, = struct.unpack_from(end + "I", data, off + 8)
                shndx, = struct.unpack_from(end + "H", data, off + 14)
            if name_off:
                out.append((_cstr(data, str_off + name_off), size, shndx))
    return out


def symbol_sizes(path):
    """{name: bytes} of the defined symbols (e.g. one weight table each)."""
    return {name: size for name, size, shndx in symbols(path) if shndx != 0}


def undefined_symbols(path):
    """Sorted names an object file needs from elsewhere (its imports)."""
    return sorted({name for name, _, shndx in symbols(path) if shndx == 0})


def sizes(path):
    """Bytes per kind of an object file or linked image (see the module docstring)."""
    out = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
    reserved = {}
    for name, typ, flags, size in sections(path):
        if not flags & SHF_ALLOC:
            continue                      # debug info, symbols, comments
        if name in (".stack", ".heap"):
            reserved[name[1:]] = reserved.get(name[1:], 0) + size
        elif flags & SHF_EXECINSTR:
            out["text"] += size
        elif typ == SHT_NOBITS:
            out["bss"] += size
        elif flags & SHF_WRITE:
            out["data"] += size
        else:
            out["rodata"] += size
    out.update(reserved)
    out["flash"] = out["text"] + out["rodata"] + out["data"]
    out["ram"] = out["data"] + out["bss"] + sum(reserved.values())
    return out
