"""Name a format from its bytes, never from a file name."""

from __future__ import annotations

import pickletools

#: torch's legacy (non-zip) format begins with this pickle: the magic number 0x1950a86a20f9469cfc6c
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_OPCODE_BYTES = frozenset(op.code.encode("latin-1") for op in pickletools.opcodes)
#: first protobuf fields of an ONNX ModelProto after ir_version (tags of fields 2-8, 14, 20, 25)
_ONNX_NEXT_TAGS = frozenset({0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA})
SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024
#: extensions that promise a model file (or a pickle inside an archive): one whose bytes match no format
#: gets a finding, not silence. The extension never decides the format, only whether silence is suspicious.
MODEL_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".joblib", ".h5", ".hdf5", ".keras",
                            ".onnx", ".safetensors", ".npy", ".npz", ".pb", ".ptl", ".mar", ".sav", ".model"})

STRONG_COMPRESSION = ("gzip", "bz2", "xz", "7z", "lz4", "zstd")


#: ModelProto's top-level fields: number -> wire type (0 varint, 2 length-delimited)
_ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}


def _varint(buf: bytes, pos: int) -> tuple[int, int] | None:
    value = shift = 0
    while pos < len(buf) and shift < 64:
        b = buf[pos]
        value |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return value, pos
        shift += 7
    return None


def _onnx_fields(head: bytes, size: int) -> bool:
    """True when the first bytes walk as ModelProto fields in any order (writers need not put
    ir_version first): every tag a ModelProto field with its wire type, every length inside the blob,
    and a graph or opset_import among at least two fields."""
    pos = 0
    seen: set[int] = set()
    while pos < len(head):
        tag = _varint(head, pos)
        if tag is None:
            break
        field_no, wire = tag[0] >> 3, tag[0] & 7
        if _ONNX_FIELDS.get(field_no) != wire:
            return False
        seen.add(field_no)
        pos = tag[1]
        val = _varint(head, pos)
        if val is None:
            break
        pos = val[1] + (val[0] if wire == 2 else 0)
        if pos > size:
            return False
    return len(seen) >= 2 and bool(seen & {7, 8})


def _is_zlib(head: bytes) -> bool:
    return len(head) >= 2 and head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0


def sniff(head: bytes, size: int) -> str:
    """Format of a blob from its first bytes (``head``, at least 512 when the blob is that long).

    Returns one of: zip, tar, gzip, bz2, xz, 7z, lz4, zstd, zlib, lzma, npy, hdf5, safetensors, torch-legacy,
    pickle, onnx, maybe-pickle (first byte is a pickle opcode: probe it), joblib-zf, unknown.
    """
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08"):
        return "zip"
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:3] == b"BZh" and head[3:4].isdigit():
        return "bz2"
    if head[:6] == b"\xfd7zXZ\x00":
        return "xz"
    if head[:6] == b"7z\xbc\xaf\x27\x1c":
        return "7z"
    if head[:4] == b"\x04\x22\x4d\x18":
        return "lz4"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if head[:6] == b"\x93NUMPY":
        return "npy"
    if head[:8] == HDF5_MAGIC:
        return "hdf5"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if head.startswith(TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    if len(head) >= 9 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")
        # '{"' right after the length is the format's signature even when the length is a lie; a plausible
        # length past the end of the data is a truncated file, which the handler reports
        if 2 <= n <= SAFETENSORS_MAX_HEADER or head[8:10] == b'{"':
            return "safetensors"
    if head[:1] == b"\x80":
        # PROTO first: a pickle, even with a protocol number pickle would refuse (then it is a parse finding)
        return "pickle"
    if head[:2] == b"ZF" and head[2:4] == b"0x":
        return "joblib-zf"
    if len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 20 and head[2] in _ONNX_NEXT_TAGS:
        return "onnx"
    if _onnx_fields(head, size):
        return "onnx"
    if _is_zlib(head):
        return "zlib"
    if head[:1] == b"\x5d" and head[1:3] == b"\x00\x00" and len(head) >= 13:
        return "lzma"
    if head[:1] in _OPCODE_BYTES:
        return "maybe-pickle"
    return "unknown"
