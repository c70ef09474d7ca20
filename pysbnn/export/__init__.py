"""Export a packed SBNN to dependency-free C99 (issue 12).

``export_c(packed, out_dir, name="sbnn", optimize="size")`` writes
``<name>.h`` / ``<name>.c`` (:mod:`pysbnn.export.c`); :mod:`pysbnn.export.plan`
chooses each layer's weight form (bitmap or a gap code of
:mod:`pysbnn.coding`); :mod:`pysbnn.export.build` compiles the files with the
drivers of ``pysbnn/export/mcu/`` for the host and for a Cortex-M4 run by QEMU,
and measures them (:mod:`pysbnn.export.elf`: flash and RAM from the ELF
sections). ``docs/mcu.md`` explains the numbers.
"""

from .c import Export, export_c

__all__ = ["Export", "export_c"]
