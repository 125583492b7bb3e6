"""A tiny, dependency-free PNG writer/reader for the benchmarks (8-bit RGB only).

Also the stage script of the DVC side of `noop_vs_dvc.py` (copied into the DVC project as
`stages.py`), doing in pure Python the same chain gantry's `dataset` and `downsample`
stages do: decode an image folder into one array, then halve it step by step.

    python3 stages.py import IMAGES_DIR OUT.bin
    python3 stages.py downsample IN.bin SIZE OUT.bin

The array files are: one header line `count height width channels\n`, `count` label
bytes (class = first subfolder, sorted), then the uint8 NHWC pixels.
"""

import os
import struct
import sys
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_rgb(width: int, height: int, pixels: bytes, level: int = 6) -> bytes:
    """PNG bytes of an 8-bit RGB image given its row-major pixels (no filtering)."""
    stride = width * 3
    raw = b"".join(
        b"\x00" + pixels[y * stride : (y + 1) * stride] for y in range(height)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw, level))
        + _chunk(b"IEND", b"")
    )


def read_png_rgb(data: bytes):
    """(width, height, pixels) of a PNG written by `png_rgb` (RGB8, filter 0 rows)."""
    if data[:8] != SIGNATURE:
        raise ValueError("not a PNG")
    pos, idat, width, height = 8, [], 0, 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            if (depth, color) != (8, 2):
                raise ValueError("only 8-bit RGB PNGs are supported")
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    raw = zlib.decompress(b"".join(idat))
    stride = width * 3 + 1
    rows = []
    for y in range(height):
        row = raw[y * stride : (y + 1) * stride]
        if row[0] != 0:
            raise ValueError("only unfiltered rows are supported")
        rows.append(row[1:])
    return width, height, b"".join(rows)


def _write_array(path, labels: bytes, h, w, c, pixels):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(f"{len(labels)} {h} {w} {c}\n".encode())
        f.write(labels)
        f.write(pixels)


def _read_array(path):
    with open(path, "rb") as f:
        header = f.readline().split()
        n, h, w, c = (int(x) for x in header)
        labels = f.read(n)
        pixels = f.read()
    return n, h, w, c, labels, pixels


def cmd_import(root, out):
    files = []
    for d, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if not x.startswith(".")]
        for name in names:
            if name.lower().endswith((".png", ".jpg", ".jpeg")) and not name.startswith("."):
                rel = os.path.relpath(os.path.join(d, name), root)
                files.append(rel)
    files.sort(key=lambda r: r.encode())
    classes = sorted({r.split(os.sep)[0] for r in files})
    index = {c: i for i, c in enumerate(classes)}
    labels, chunks, size = bytearray(), [], None
    for rel in files:
        with open(os.path.join(root, rel), "rb") as f:
            w, h, px = read_png_rgb(f.read())
        if size is None:
            size = (w, h)
        elif size != (w, h):
            raise SystemExit(f"{rel}: {w}x{h}, expected {size[0]}x{size[1]}")
        labels.append(index[rel.split(os.sep)[0]] % 256)
        chunks.append(px)
    _write_array(out, bytes(labels), size[1], size[0], 3, b"".join(chunks))
    print(f"imported {len(files)} images of {size[0]}x{size[1]}")


def cmd_downsample(src, size, out):
    n, h, w, c, labels, px = _read_array(src)
    size = int(size)
    if h != 2 * size or w != 2 * size:
        raise SystemExit(f"this stage only halves: {w}x{h} -> {size}")
    stride, img = w * c, h * w * c
    out_px = bytearray()
    for i in range(n):
        base = i * img
        for y in range(size):
            r0 = px[base + 2 * y * stride : base + (2 * y + 1) * stride]
            r1 = px[base + (2 * y + 1) * stride : base + (2 * y + 2) * stride]
            for ch in range(c):
                a, b = r0[ch::2 * c], r0[ch + c :: 2 * c]
                d, e = r1[ch::2 * c], r1[ch + c :: 2 * c]
                vals = bytes((p + q + r + s + 2) // 4 for p, q, r, s in zip(a, b, d, e))
                # Interleave this channel back in place (box filter, 2x2).
                if ch == 0:
                    row = bytearray(size * c)
                row[ch::c] = vals
            out_px += row
    _write_array(out, labels, size, size, c, bytes(out_px))
    print(f"downsampled {n} images to {size}x{size}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "import":
        cmd_import(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "downsample":
        cmd_downsample(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        raise SystemExit(__doc__)
