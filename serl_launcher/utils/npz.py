"""Reading .npz archives from files that may be hostile: their array headers are checked before
any array is loaded, so a forged shape or a decompression bomb cannot exhaust memory."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np


def declared_bytes(path: str | os.PathLike) -> int:
    """What the arrays of the .npz at `path` say they hold, from their .npy headers alone."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
                total += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return total


def memory_bytes() -> int:
    """This machine's physical memory (very large where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def check_declared_size(path: str | os.PathLike) -> None:
    """ValueError when the archive's arrays declare more than half of this machine's memory;
    zipfile.BadZipFile / ValueError when its members are not .npy arrays."""
    declared, limit = declared_bytes(Path(path)), memory_bytes() // 2
    if declared > limit:
        raise ValueError(f"its arrays declare {declared / 2**30:.1f} GiB, more than half of this machine's "
                         f"memory ({limit / 2**30:.1f} GiB)")
