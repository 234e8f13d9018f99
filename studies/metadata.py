"""What of a photo file is stored: only what it takes to decode the picture, nothing about who or where.

Each function reads a whole file (bytes or a memory map) and says which of its
bytes a clean copy keeps, as `Pieces`. JPEG segments, PNG chunks and WebP
chunks are kept or dropped whole, so the compressed picture stays bit for bit
what was uploaded: no re-encoding, no loss. Dropped: EXIF (GPS, camera, time),
XMP, IPTC and Photoshop blocks, ICC profiles (they carry free text), comments,
text chunks, and every byte after the end of the image (cameras append
previews with their own EXIF). TIFF is only checked: its tags point all over
the file, so the pipeline re-encodes a TIFF that is not already clean.

The cost is one pass over the file with a compiled regular expression (a few
milliseconds for 12 megapixels) and no Python copy of it.
"""

import re
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO

CHUNK = 1024 * 1024


class DamagedFile(Exception):
    """The file's structure cannot be followed to the end of its picture."""


@dataclass
class Pieces:
    """A clean copy of a file of `size` bytes: ranges of the original and new bytes, in order."""

    size: int
    parts: list[tuple[int, int] | bytes] = field(default_factory=list)

    def keep(self, start: int, end: int) -> None:
        last = self.parts[-1] if self.parts else None
        if isinstance(last, tuple) and last[1] == start:
            self.parts[-1] = (last[0], end)
        elif end > start:
            self.parts.append((start, end))

    def add(self, data: bytes) -> None:
        self.parts.append(bytes(data))

    @property
    def unchanged(self) -> bool:
        return self.parts == [(0, self.size)]

    def write(self, data, target: BinaryIO) -> None:
        with memoryview(data) as view:
            for part in self.parts:
                if isinstance(part, bytes):
                    target.write(part)
                    continue
                for offset in range(part[0], part[1], CHUNK):
                    with view[offset : min(offset + CHUNK, part[1])] as piece:
                        target.write(piece)

    def tobytes(self, data) -> bytes:
        with memoryview(data) as view:
            return b"".join(part if isinstance(part, bytes) else view[slice(*part)] for part in self.parts)


def _int(data, start: int, length: int, order: str = "big") -> int:
    return int.from_bytes(data[start : start + length], order)


# --- JPEG -------------------------------------------------------------------------------------------

# Segments a decoder needs: frames (SOF0-15 but JPG), tables (DHT, DAC, DQT, DRI), scans, DNL, DHP, EXP.
JPEG_DECODING_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC8} | {0xDA, 0xDB, 0xDC, 0xDD, 0xDE, 0xDF}
JPEG_STANDALONE_MARKERS = frozenset(range(0xD0, 0xD8)) | {0x01}
JFIF = b"JFIF\0"
ADOBE = b"Adobe"
# In entropy-coded data 0xFF is followed by 0x00 (stuffing) or a restart marker; anything else ends the scan.
JPEG_END_OF_SCAN = re.compile(rb"\xff\xff*[^\x00\xd0-\xd7\xff]")
ANY_MARKER = re.compile(rb"\xff")


def _jpeg_bare_segment(marker: int, payload) -> bytes | None:
    """A JFIF or Adobe segment with its fixed fields only; None for any other segment."""
    if marker == 0xE0 and payload[:5] == JFIF and len(payload) >= 14:
        # version, density unit and densities; the optional thumbnail (a picture of its own) goes.
        return b"\xff\xe0\x00\x10" + bytes(payload[:12]) + b"\0\0"
    if marker == 0xEE and payload[:5] == ADOBE and len(payload) >= 12:
        # The colour transform flag: a CMYK or RGB JPEG decodes wrongly without it.
        return b"\xff\xee\x00\x0e" + bytes(payload[:12])
    return None


def _jpeg_keep_segment(pieces: Pieces, data, marker: int, start: int, end: int) -> None:
    """Keep a decoding segment, a bare JFIF or Adobe segment in place of the original; drop the rest."""
    if marker in JPEG_DECODING_MARKERS:
        pieces.keep(start, end)
    elif (bare := _jpeg_bare_segment(marker, data[start + 4 : min(end, start + 18)])) is None:
        return  # APP1-15 (EXIF, XMP, ICC, IPTC, ...), comments, anything unknown
    elif bare == data[start:end]:
        pieces.keep(start, end)
    else:
        pieces.add(bare)


def jpeg_pieces(data) -> Pieces:
    """A JPEG with only its decoding segments, a bare JFIF or Adobe segment, and nothing after EOI."""
    size = len(data)
    if data[:2] != b"\xff\xd8":
        raise DamagedFile("no start-of-image marker")
    pieces = Pieces(size)
    pieces.keep(0, 2)
    position, scanned = 2, False
    while True:
        if position + 1 >= size:
            if not scanned:
                raise DamagedFile("the file ends inside its header")
            pieces.add(b"\xff\xd9")  # the picture decoded: only the end marker was missing
            return pieces
        if data[position] != 0xFF:  # stray bytes between segments: a decoder skips them, so do we
            found = ANY_MARKER.search(data, position)
            position = found.start() if found else size
            continue
        while position + 1 < size and data[position + 1] == 0xFF:  # fill bytes are dropped
            position += 1
        if position + 1 >= size:
            continue
        marker = data[position + 1]
        if marker == 0xD9:
            pieces.keep(position, position + 2)  # what follows (a preview, a tail) is dropped
            return pieces
        if marker in JPEG_STANDALONE_MARKERS:  # a restart outside a scan means nothing: libjpeg skips it
            position += 2
            continue
        length = _int(data, position + 2, 2)
        end = position + 2 + length
        if length < 2 or end > size:
            raise DamagedFile("truncated header segment")
        _jpeg_keep_segment(pieces, data, marker, position, end)
        position = end
        if marker == 0xDA:  # the compressed picture runs to the next marker that is not a restart
            scanned = True
            found = JPEG_END_OF_SCAN.search(data, position)
            scan_end = found.start() if found else size
            pieces.keep(position, scan_end)
            position = scan_end


# --- PNG --------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Critical chunks, transparency, and the fixed-size numbers that say how colours display.
PNG_KEPT_CHUNKS = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"sBIT"})
PNG_END = b"\0\0\0\0IEND" + zlib.crc32(b"IEND").to_bytes(4, "big")


def png_pieces(data) -> Pieces:
    """A PNG with only its critical and colour chunks, ending at IEND."""
    size = len(data)
    if data[:8] != PNG_SIGNATURE:
        raise DamagedFile("no PNG signature")
    pieces = Pieces(size)
    pieces.keep(0, 8)
    position = 8
    while position + 8 <= size:
        kind = bytes(data[position + 4 : position + 8])
        end = position + 12 + _int(data, position, 4)
        if end > size:
            raise DamagedFile(f"truncated {kind.decode('latin-1')!r} chunk")
        if kind in PNG_KEPT_CHUNKS:
            pieces.keep(position, end)
        if kind == b"IEND":
            return pieces
        position = end
    pieces.add(PNG_END)
    return pieces


# --- WebP -------------------------------------------------------------------------------------------

WEBP_KEPT_CHUNKS = frozenset({b"VP8X", b"VP8 ", b"VP8L", b"ALPH"})
VP8X_ALPHA = 0x10  # the one VP8X flag kept; ICC, EXIF, XMP and animation flags are cleared


def webp_chunks(data) -> list[tuple[bytes, int, int]]:
    """Each chunk of a WebP file as (four-character code, start, end including padding)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise DamagedFile("no RIFF WEBP header")
    riff_end = min(8 + _int(data, 4, 4, "little"), len(data))
    chunks, position = [], 12
    while position + 8 <= riff_end:
        length = _int(data, position + 4, 4, "little")
        end = position + 8 + length + (length & 1)
        if position + 8 + length > riff_end:
            raise DamagedFile("truncated chunk")
        chunks.append((bytes(data[position : position + 4]), position, min(end, riff_end)))
        position = end
    return chunks


def webp_pieces(data) -> Pieces:
    """A WebP with only its picture chunks (VP8X with the alpha flag alone, ALPH, VP8 or VP8L)."""
    kept = [chunk for chunk in webp_chunks(data) if chunk[0] in WEBP_KEPT_CHUNKS]
    body_size = sum(end - start for _, start, end in kept)
    header = b"RIFF" + (4 + body_size).to_bytes(4, "little") + b"WEBP"
    pieces = Pieces(len(data))
    if header == bytes(data[:12]):
        pieces.keep(0, 12)
    else:
        pieces.add(header)
    for kind, start, end in kept:
        if kind == b"VP8X" and (data[start + 8] & ~VP8X_ALPHA or any(data[start + 9 : start + 12])):
            pieces.add(bytes(data[start : start + 8]) + bytes([data[start + 8] & VP8X_ALPHA, 0, 0, 0]))
            pieces.keep(start + 12, end)
        else:
            pieces.keep(start, end)
    return pieces


# --- TIFF -------------------------------------------------------------------------------------------

# Tags that describe the picture's pixels and where they are; any other tag makes a TIFF unclean.
TIFF_PICTURE_TAGS = frozenset(
    {
        254,  # NewSubfileType
        256,  # ImageWidth
        257,  # ImageLength
        258,  # BitsPerSample
        259,  # Compression
        262,  # PhotometricInterpretation
        266,  # FillOrder
        273,  # StripOffsets
        277,  # SamplesPerPixel
        278,  # RowsPerStrip
        279,  # StripByteCounts
        282,  # XResolution
        283,  # YResolution
        284,  # PlanarConfiguration
        296,  # ResolutionUnit
        317,  # Predictor
        320,  # ColorMap
        322,  # TileWidth
        323,  # TileLength
        324,  # TileOffsets
        325,  # TileByteCounts
        338,  # ExtraSamples
        339,  # SampleFormat
        347,  # JPEGTables
        530,  # YCbCrSubSampling
        532,  # ReferenceBlackWhite
    }
)
TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
TIFF_COMPRESSIONS = {1: "raw", 5: "lzw", 7: "jpeg", 8: "deflate", 32773: "packbits", 32946: "deflate"}
TIFF_GAP = 3  # word-alignment padding between the parts of a TIFF, at most


def _tiff_entries(data, order: str) -> tuple[int, dict[int, tuple[int, int, int]]] | None:
    """The only IFD of a classic TIFF: (its end, {tag: (type, count, value offset)}); None if not one."""
    ifd = _int(data, 4, 4, order)
    if ifd < 8 or ifd + 2 > len(data):
        return None
    count = _int(data, ifd, 2, order)
    ifd_end = ifd + 2 + 12 * count + 4
    if ifd_end > len(data) or _int(data, ifd_end - 4, 4, order):  # a second page or thumbnail
        return None
    entries = {}
    for n in range(count):
        entry = ifd + 2 + 12 * n
        kind, values = _int(data, entry + 2, 2, order), _int(data, entry + 4, 4, order)
        if kind not in TIFF_TYPE_SIZES:
            return None
        entries[_int(data, entry, 2, order)] = (kind, values, entry + 8)
    return ifd_end, entries


def _tiff_values(data, order: str, kind: int, count: int, at: int) -> tuple[list[int], int]:
    """A tag's integer values and where they are stored."""
    width = TIFF_TYPE_SIZES[kind]
    if width * count > 4:
        at = _int(data, at, 4, order)
    if kind not in (3, 4) or at + width * count > len(data):
        return [], at
    return [_int(data, at + width * n, width, order) for n in range(count)], at


def tiff_is_clean(data) -> bool:
    """One page, picture tags only, and no byte that no tag points to (beyond alignment padding)."""
    order = {b"II*\0": "little", b"MM\0*": "big"}.get(bytes(data[:4]))
    parsed = _tiff_entries(data, order) if order else None
    if parsed is None:
        return False
    ifd_end, entries = parsed
    if not set(entries) <= TIFF_PICTURE_TAGS:
        return False
    used = [(0, 8), (_int(data, 4, 4, order), ifd_end)]
    values, places = {}, {}
    for tag, (kind, count, at) in entries.items():
        values[tag], start = _tiff_values(data, order, kind, count, at)
        if TIFF_TYPE_SIZES[kind] * count > 4:
            places[tag] = (start, start + TIFF_TYPE_SIZES[kind] * count)
    pictures = []
    for offsets, counts in ((273, 279), (324, 325)):
        starts, lengths = values.get(offsets, []), values.get(counts, [])
        if len(starts) != len(lengths):
            return False
        pictures += [(start, start + length) for start, length in zip(starts, lengths, strict=True)]
    compression = TIFF_COMPRESSIONS.get((values.get(259) or [1])[0])
    if compression is None or not pictures:
        return False
    if compression == "jpeg" and not _jpeg_streams_are_clean(data, [*pictures, places.get(347, (0, 0))]):
        return False
    return _tiff_all_bytes_used([*used, *places.values(), *pictures], len(data))


def _jpeg_streams_are_clean(data, streams: list[tuple[int, int]]) -> bool:
    """A JPEG-compressed TIFF holds JPEG streams (tables, one per strip or tile): each must be clean."""
    try:
        with memoryview(data) as view:
            return all(jpeg_pieces(view[start:end]).unchanged for start, end in streams if end > start)
    except DamagedFile:
        return False


def _tiff_all_bytes_used(used: list[tuple[int, int]], size: int) -> bool:
    covered = 0
    for start, end in sorted(used):
        if start - covered > TIFF_GAP:
            return False
        covered = max(covered, end)
    return 0 <= size - covered <= TIFF_GAP


# --- WebP quality ------------------------------------------------------------------------------------


class _BoolDecoder:
    """VP8's boolean entropy decoder (RFC 6386, section 7), enough to read a frame header."""

    def __init__(self, data: bytes):
        self.data, self.position = data, 2
        self.value, self.range, self.bit_count = int.from_bytes(data[:2], "big"), 255, 0

    def bit(self, probability: int = 128) -> int:
        split = 1 + (((self.range - 1) * probability) >> 8)
        if self.value >= split << 8:
            self.range -= split
            self.value -= split << 8
            result = 1
        else:
            self.range = split
            result = 0
        while self.range < 128:
            self.value, self.range, self.bit_count = self.value << 1, self.range << 1, self.bit_count + 1
            if self.bit_count == 8:
                self.bit_count = 0
                if self.position < len(self.data):
                    self.value |= self.data[self.position]
                self.position += 1
        return result

    def number(self, bits: int) -> int:
        value = 0
        for _ in range(bits):
            value = value << 1 | self.bit()
        return value

    def signed(self, bits: int) -> int:
        value = self.number(bits)
        return -value if self.bit() else value

    def optional(self, bits: int, signed: bool = True) -> int | None:
        if not self.bit():
            return None
        return self.signed(bits) if signed else self.number(bits)


def _vp8_quantizers(frame) -> list[int]:
    """The quantizer index (0 best to 127 worst) of each segment of a VP8 key frame."""
    if len(frame) < 12 or frame[0] & 1 or frame[3:6] != b"\x9d\x01\x2a":
        raise DamagedFile("not a VP8 key frame")
    header = _BoolDecoder(bytes(frame[10 : 10 + 64]))
    header.number(2)  # colour space, clamping
    segment_quantizers, absolute = [], False
    if header.bit():  # segmentation
        update_map, update_data = header.bit(), header.bit()
        if update_data:
            absolute = bool(header.bit())
            segment_quantizers = [header.optional(7) or 0 for _ in range(4)]
            for _ in range(4):
                header.optional(6)  # loop filter level
        if update_map:
            for _ in range(3):
                header.optional(8, signed=False)
    header.number(1 + 6 + 3)  # filter type, level, sharpness
    if header.bit() and header.bit():  # loop filter deltas, updated
        for _ in range(8):
            header.optional(6)
    header.number(2)  # partitions
    base = header.number(7)
    if not segment_quantizers:
        return [base]
    return [q if absolute else base + q for q in segment_quantizers]


def webp_lossy_quality(data) -> int | None:
    """About the libwebp `quality` a lossy WebP was made with, from its quantizers; None if lossless.

    Inverts libwebp's mapping (src/enc/quant_enc.c: q = 127 * (1 - c), c = linear ** (1/3)).
    """
    frames = [(start, end) for kind, start, end in webp_chunks(data) if kind == b"VP8 "]
    if not frames:
        return None
    # The finest segment: libwebp spreads segments around its base quantizer by weights the header
    # does not hold, and the finest one errs towards keeping quality (a few points above the source's).
    quantizer = min(127, max(0, min(_vp8_quantizers(data[frames[0][0] + 8 : frames[0][1]]))))
    linear = (1 - quantizer / 127) ** 3
    compression = linear * 1.5 if linear < 0.5 else (linear + 1) / 2
    return max(1, min(100, round(compression * 100)))
