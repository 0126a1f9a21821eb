"""The bcirig frame protocol: a 40-byte header and the raw pixels (``PROTOCOL.md`` beside this file).

The same header serves both framings: over ZeroMQ it is the first part of a two-part message (the
pixels the second); over plain TCP the header is followed by the pixels in one byte stream. Everything
is little-endian unless the header's flag says the pixels are big-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

MAGIC = b"BCIF"
VERSION = 1
HEADER = struct.Struct("<4sHHqqHBBIII")  # magic, version, header bytes, index, t_acq_ns, plane, dtype, flags, h, w, n
HEADER_BYTES = HEADER.size  # 40
NO_PLANE = 0xFFFF

DTYPE_CODES: dict[int, np.dtype] = {1: np.dtype("<u1"), 2: np.dtype("<u2"), 3: np.dtype("<u4"), 4: np.dtype("<i2")}
CODE_OF = {dt.name: code for code, dt in DTYPE_CODES.items()}
FLAG_COLUMN_MAJOR = 0x01  # pixels in MATLAB's order: down each column first
FLAG_BIG_ENDIAN = 0x02  # pixels (not the header) big-endian
MAX_PIXELS = 4096 * 4096


class FrameWireError(ValueError):
    """Bytes that are not a bcirig frame header (names what is wrong)."""


@dataclass(frozen=True)
class FrameHeader:
    """A decoded header."""

    index: int
    t_acq_ns: int
    plane: int  # -1 = unknown
    dtype: np.dtype
    height: int
    width: int
    column_major: bool = False
    big_endian: bool = False

    @property
    def payload_bytes(self) -> int:
        """Bytes of pixels that follow the header."""
        return self.height * self.width * self.dtype.itemsize


def pack_header(index: int, t_acq_ns: int, plane: int, data: np.ndarray, *, column_major: bool = False) -> bytes:
    """The 40-byte header for ``data`` (a 2-D array whose bytes follow as they lie in memory)."""
    if data.ndim != 2:
        raise ValueError(f"a frame is one 2-D plane image, got shape {data.shape}")
    code = CODE_OF.get(data.dtype.newbyteorder("<").name if data.dtype.byteorder == ">" else data.dtype.name)
    if code is None:
        raise ValueError(f"dtype {data.dtype} cannot be sent; one of {', '.join(CODE_OF)}")
    flags = (FLAG_COLUMN_MAJOR if column_major else 0) | (FLAG_BIG_ENDIAN if data.dtype.byteorder == ">" else 0)
    h, w = data.shape
    return HEADER.pack(MAGIC, VERSION, HEADER_BYTES, int(index), int(t_acq_ns),
                       NO_PLANE if plane < 0 else int(plane), code, flags, h, w, data.nbytes)


def unpack_header(buf: bytes | memoryview) -> FrameHeader:
    """Decode and check a header; raises :class:`FrameWireError` saying what is wrong."""
    if len(buf) < HEADER_BYTES:
        raise FrameWireError(f"header of {len(buf)} bytes, expected {HEADER_BYTES}")
    magic, version, hbytes, index, t_acq, plane, code, flags, h, w, n = HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise FrameWireError(f"magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version != VERSION or hbytes != HEADER_BYTES:
        raise FrameWireError(f"protocol version {version} with a {hbytes}-byte header; this rig speaks "
                             f"version {VERSION} ({HEADER_BYTES} bytes)")
    if code not in DTYPE_CODES:
        raise FrameWireError(f"dtype code {code}; known: {sorted(DTYPE_CODES)}")
    dtype = DTYPE_CODES[code]
    if flags & FLAG_BIG_ENDIAN:
        dtype = dtype.newbyteorder(">")
    if not (h > 0 and w > 0 and h * w <= MAX_PIXELS):
        raise FrameWireError(f"frame of {h} x {w} pixels (at most {MAX_PIXELS} in all)")
    if n != h * w * dtype.itemsize:
        raise FrameWireError(f"payload of {n} bytes for {h} x {w} {dtype.name} ({h * w * dtype.itemsize} expected)")
    return FrameHeader(index=index, t_acq_ns=t_acq, plane=-1 if plane == NO_PLANE else plane, dtype=dtype,
                       height=h, width=w, column_major=bool(flags & FLAG_COLUMN_MAJOR),
                       big_endian=bool(flags & FLAG_BIG_ENDIAN))


def pixels(header: FrameHeader, payload: bytes | memoryview) -> np.ndarray:
    """The (height, width) image of a payload (a view where the layout allows, native byte order)."""
    flat = np.frombuffer(payload, dtype=header.dtype, count=header.height * header.width)
    if header.column_major:
        img = flat.reshape(header.width, header.height).T
    else:
        img = flat.reshape(header.height, header.width)
    if header.big_endian:
        img = img.astype(header.dtype.newbyteorder("="))
    return img
