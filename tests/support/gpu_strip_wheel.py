"""Repack a wheel without the folders the GPU test never imports, to fit the device's 64 MiB carry.

Usage: python gpu_strip_wheel.py WHEEL PREFIX [PREFIX ...]; members starting with a PREFIX are
dropped, and so are their RECORD lines, so pip installs the slimmer wheel without complaint.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path


def strip_wheel(wheel: Path, prefixes: tuple[str, ...]) -> None:
    """Rewrite ``wheel`` in place without members under ``prefixes``."""
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename.startswith(prefixes):
                continue
            data = src.read(info)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode().splitlines(keepends=True)
                data = "".join(x for x in lines if not x.startswith(prefixes)).encode()
            dst.writestr(info, data)
    tmp.replace(wheel)


if __name__ == "__main__":
    strip_wheel(Path(sys.argv[1]), tuple(sys.argv[2:]))
