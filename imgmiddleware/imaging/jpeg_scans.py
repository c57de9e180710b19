"""Make a progressive JPEG cheap to decode at 1/8 scale, without changing a single output pixel.

At 1/8 scale libjpeg-turbo gives most components a 1x1 inverse DCT, which reads only the DC
coefficient; a component keeps a larger IDCT only when it is subsampled by 2 in both directions
(4:2:0 chroma). A baseline decoder skips the AC data it does not need cheaply, but a progressive one
must entropy-decode every scan, which makes a progressive 1/8 decode several times slower than a
baseline one. So before decoding we drop every AC scan of the 1x1 components and keep everything
else (markers, tables, every DC scan, the AC scans of components that need them).

Dropping AC scans alone would not be exact: a progressive decoder treats AC coefficients it never
received as unknown and "block-smooths" the picture to guess them (even the DC, when no AC arrived
at all). So each trimmed component gets one synthetic AC scan, appended just before EOI, that
covers coefficients 1..63 with end-of-band runs only: the decoder then knows those coefficients
are final zeros, and the DC coefficients, the only ones the 1x1 IDCT uses, decode as before.

Only what is proven exact is rewritten: 8-bit progressive Huffman JPEG without restart intervals.
Everything else, and anything that does not parse as expected, gets ``None``: decode the original.
One corruption cannot be seen without entropy-decoding: a last scan whose data ends early (an EOI
spliced into it). libjpeg-turbo then smooths the rows after the break with the previous scan's
state, so such a file may decode a little differently after the rewrite (it still decodes).
"""

from __future__ import annotations

import re

_SOI, _EOI, _SOS, _SOF2, _DHT, _DRI = 0xD8, 0xD9, 0xDA, 0xC2, 0xC4, 0xDD
_SOF_CODES = frozenset(range(0xC0, 0xD0)) - {_DHT, 0xC8, 0xCC}   # C8 is reserved, CC is DAC
_SEGMENTS = frozenset(range(0xE0, 0xF0)) | {0xDB, 0xFE}         # APPn, DQT, COM: passed through
# The end of entropy-coded data: 0xFF followed by anything but a stuffed zero.
_NEXT_MARKER = re.compile(rb"\xff[^\x00]")
_MAX_EOBRUN = (1 << 15) - 1                                     # EOBRUN symbol 0xE0 with 14 bits
# One AC table whose 15 symbols are the end-of-band runs 0x00, 0x10, ... 0xE0, each a 4-bit code.
_EOB_TABLE_SLOT = 0
_EOB_DHT = (b"\xff\xc4\x00\x22" + bytes([0x10 | _EOB_TABLE_SLOT])
            + bytes([0, 0, 0, 15] + [0] * 12) + bytes(range(0x00, 0xF0, 0x10)))


class _Unsupported(ValueError):
    """The stream is not one this module can rewrite exactly."""


def dc_only_stream(data: bytes | memoryview, only_if_smaller: bool = True) -> bytes | None:
    """``data`` without the AC scans a 1/8-scale decode does not use, or ``None`` when it cannot be
    rewritten (not progressive, restart intervals, malformed, ...) or, unless ``only_if_smaller``
    is off (for tests on tiny images), would not get smaller.

    Decoding the result at 1/8 scale gives exactly the pixels the original gives. Never raises."""
    try:
        out = _rewrite(memoryview(data).cast("B"))
    except (_Unsupported, IndexError, ValueError, TypeError):
        return None
    if out is not None and only_if_smaller and len(out) > len(data):
        return None
    return out


def idct_size(h: int, v: int, h_max: int, v_max: int) -> int:
    """The side of the IDCT libjpeg-turbo uses for a component at 1/8 scale (jdmaster.c): the
    1x1 IDCT doubles for as long as the component is subsampled by two more in both directions."""
    size = 1
    while size < 8 and h_max % (h * size * 2) == 0 and v_max % (v * size * 2) == 0:
        size *= 2
    return size


def _rewrite(mv: memoryview) -> bytes | None:
    """One walk over the markers, reading segment lengths and searching only for the end of each
    scan's entropy-coded data; the kept byte ranges are joined once at the end."""
    if len(mv) < 4 or mv[0] != 0xFF or mv[1] != _SOI:
        return None
    frame = None                 # {component id: (h, v)} from SOF2
    width = height = h_max = v_max = 0
    dc_only: set[int] = set()    # components decoded with a 1x1 IDCT
    ac_tables: set[int] = set()  # AC Huffman table slots defined so far
    dropped: dict[int, bool] = {}   # component -> whether one of its dropped scans starts at 1
    keep: list[memoryview] = []
    kept_from = 0                # start of the run of bytes still to be kept
    pos = 2
    while True:
        if mv[pos] != 0xFF:
            raise _Unsupported("expected a marker")
        while mv[pos + 1] == 0xFF:   # fill bytes before a marker
            pos += 1
        code = mv[pos + 1]
        if code == _EOI:
            end = pos
            break
        if code in _SOF_CODES:
            if code != _SOF2 or frame is not None:
                return None      # baseline, extended, lossless, arithmetic, hierarchical: as is
            frame, width, height = _frame(mv, pos)
            h_max = max(h for h, _ in frame.values())
            v_max = max(v for _, v in frame.values())
            dc_only = {cid for cid, (h, v) in frame.items() if idct_size(h, v, h_max, v_max) == 1}
        elif code == _SOS:
            if frame is None:
                raise _Unsupported("scan before frame")
            header_end = pos + 2 + _length(mv, pos)
            components, ss, tables = _scan(mv, pos, frame)
            match = _NEXT_MARKER.search(mv, header_end)
            if match is None:
                raise _Unsupported("truncated scan")
            next_pos = match.start()
            if 0xD0 <= mv[next_pos + 1] <= 0xD7:
                raise _Unsupported("restart marker without DRI")
            if ss > 0:           # an AC scan: always one component
                (cid,), (table,) = components, tables
                if cid in dc_only:
                    if table not in ac_tables:
                        raise _Unsupported("undefined table")   # the original would not decode
                    dropped[cid] = dropped.get(cid, False) or ss == 1
                    keep.append(mv[kept_from:pos])
                    kept_from = next_pos
            pos = next_pos
            continue
        elif code == _DHT:
            ac_tables |= _huffman_slots(mv, pos)
        elif code == _DRI:
            if _length(mv, pos) != 4:
                raise _Unsupported("bad DRI")
            if mv[pos + 4] or mv[pos + 5]:
                return None      # restart intervals: not worth the bookkeeping
        elif code not in _SEGMENTS:
            raise _Unsupported("unexpected marker")   # DNL, DAC, EXP, RSTn, TEM, reserved
        pos += 2 + _length(mv, pos)
    if frame is None or not dropped:
        return None
    if not all(dropped.values()):
        # The original never had coefficient 1 of such a component: the decoder may have thought
        # its AC absent and interpolated its DC. Too unusual to be worth proving.
        return None
    keep.append(mv[kept_from:end])
    keep.append(_EOB_DHT)
    for cid in dropped:
        h, v = frame[cid]
        blocks = -(-width * h // (h_max * 8)) * -(-height * v // (v_max * 8))
        keep.append(bytes([0xFF, _SOS, 0, 8, 1, cid, _EOB_TABLE_SLOT, 1, 63, 0]))
        keep.append(eob_runs(blocks))
    keep.append(b"\xff\xd9")
    return b"".join(keep)


def _length(mv: memoryview, pos: int) -> int:
    """The length field of the segment whose marker is at ``pos``; it counts itself."""
    length = mv[pos + 2] << 8 | mv[pos + 3]
    if length < 2 or pos + 2 + length > len(mv):
        raise _Unsupported("bad segment length")
    return length


def _frame(mv: memoryview, pos: int) -> tuple[dict[int, tuple[int, int]], int, int]:
    length = _length(mv, pos)
    precision, height, width, count = (mv[pos + 4], mv[pos + 5] << 8 | mv[pos + 6],
                                       mv[pos + 7] << 8 | mv[pos + 8], mv[pos + 9])
    if precision != 8 or not height or not width or not 1 <= count <= 4 or length != 8 + 3 * count:
        raise _Unsupported("unsupported frame")   # 12-bit, DNL height, odd component counts
    frame = {}
    for i in range(count):
        cid, sampling = mv[pos + 10 + 3 * i], mv[pos + 11 + 3 * i]
        h, v = sampling >> 4, sampling & 15
        if cid in frame or not (1 <= h <= 4 and 1 <= v <= 4):
            raise _Unsupported("bad component")
        frame[cid] = (h, v)
    return frame, width, height


def _scan(mv: memoryview, pos: int, frame: dict) -> tuple[list[int], int, list[int]]:
    """A scan's components, spectral start and AC table slots; the header is checked the way
    libjpeg's progressive decoder checks it (jdphuff.c), since it refuses what fails."""
    length = _length(mv, pos)
    count = mv[pos + 4]
    if not 1 <= count <= 4 or length != 6 + 2 * count:
        raise _Unsupported("bad scan header")
    components = [mv[pos + 5 + 2 * i] for i in range(count)]
    ac_tables = [mv[pos + 6 + 2 * i] & 15 for i in range(count)]
    ss, se, approx = mv[pos + 5 + 2 * count], mv[pos + 6 + 2 * count], mv[pos + 7 + 2 * count]
    ah, al = approx >> 4, approx & 15
    if len(set(components)) != count or not set(components) <= frame.keys():
        raise _Unsupported("bad scan components")
    if ss == 0:
        bad = se != 0
    else:
        bad = ss > se or se > 63 or count != 1
    if bad or (ah != 0 and al != ah - 1) or al > 13:
        raise _Unsupported("bad progression")
    return components, ss, ac_tables


def _huffman_slots(mv: memoryview, pos: int) -> set[int]:
    """The AC table slots a DHT segment (which may hold several tables) defines."""
    end = pos + 2 + _length(mv, pos)
    at, slots = pos + 4, set()
    while at < end:
        kind = mv[at]
        count = sum(mv[at + 1:at + 17])
        if kind >> 4 > 1 or kind & 15 > 3 or count > 256 or at + 17 + count > end:
            raise _Unsupported("bad DHT")
        if kind >> 4 == 1:
            slots.add(kind & 15)
        at += 17 + count
    return slots


def eob_runs(blocks: int) -> bytes:
    """Entropy-coded data saying "end of band" for ``blocks`` blocks in a row, with the table in
    ``_EOB_DHT``: symbol r<<4 (code r, 4 bits) then r bits, for a run of 2**r plus those bits."""
    acc = nbits = 0
    out = bytearray()
    while blocks > 0:
        run = min(blocks, _MAX_EOBRUN)
        r = run.bit_length() - 1
        acc = (acc << (4 + r)) | (r << r) | (run - (1 << r))
        nbits += 4 + r
        blocks -= run
        while nbits >= 8:
            nbits -= 8
            out.append((acc >> nbits) & 0xFF)
            acc &= (1 << nbits) - 1
    if nbits:
        out.append(((acc << (8 - nbits)) | ((1 << (8 - nbits)) - 1)) & 0xFF)   # pad with 1s
    return bytes(out).replace(b"\xff", b"\xff\x00")
