"""The RTMP chunk stream (Adobe RTMP 1.0, section 5.3): messages cut into chunks, and back.

Sans-IO: `ChunkDecoder.feed(bytes)` returns every message completed by those bytes, however
they were split (one byte at a time works), and `ChunkEncoder.encode(message)` returns the
chunks for one outgoing message.

A chunk is a basic header, a message header and up to `chunk size` bytes of payload:

    basic header   fmt (2 bits) + chunk stream id: 1 byte (csid 2..63),
                   2 bytes (0, csid - 64) or 3 bytes (1, csid - 64 little-endian)
    message header fmt 0: timestamp(3) length(3) type(1) stream id(4, little-endian)
                   fmt 1: delta(3) length(3) type(1)      (same stream id)
                   fmt 2: delta(3)                        (same stream id, length, type)
                   fmt 3: nothing                         (everything as before)
    extended ts    4 bytes when the 3-byte field is 0xFFFFFF; repeated on the fmt 3 chunks
                   that follow such a header (ffmpeg, OBS and librtmp all send it there)

The decoder applies Set Chunk Size and Abort itself, at the point in the byte stream where
they arrive (they change how the very next chunk is read), and still returns them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Message type ids (section 5.4 and 7.1).
SET_CHUNK_SIZE = 1
ABORT = 2
ACKNOWLEDGEMENT = 3
USER_CONTROL = 4
WINDOW_ACK_SIZE = 5
SET_PEER_BANDWIDTH = 6
AUDIO = 8
VIDEO = 9
DATA_AMF3 = 15
SHARED_OBJECT_AMF3 = 16
COMMAND_AMF3 = 17
DATA_AMF0 = 18
SHARED_OBJECT_AMF0 = 19
COMMAND_AMF0 = 20
AGGREGATE = 22

# User control event types (section 7.1.7).
STREAM_BEGIN = 0
STREAM_EOF = 1
STREAM_DRY = 2
SET_BUFFER_LENGTH = 3
STREAM_IS_RECORDED = 4
PING_REQUEST = 6
PING_RESPONSE = 7

DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 0x7FFFFFFF  # what Set Chunk Size may announce (31 bits)
# A message is at most 0xFFFFFF bytes (24-bit length), so a chunk size above that reads exactly
# like 0xFFFFFF: the cap changes nothing on the wire and bounds what one chunk can make us hold.
CHUNK_SIZE_CAP = 0xFFFFFF
EXTENDED = 0xFFFFFF
# Bytes of unfinished messages held across all chunk streams: a peer that starts messages on
# thousands of chunk streams and never finishes them is cut off here.
MAX_PENDING = 64 * 1024 * 1024
MAX_CSID = 65599


class RtmpProtocolError(Exception):
    """The peer broke the RTMP protocol; the connection cannot go on."""


@dataclass(slots=True)
class Message:
    """One RTMP message: `csid` is the chunk stream it came on (or goes out on)."""

    type_id: int
    payload: bytes
    timestamp: int = 0
    stream_id: int = 0
    csid: int = 2


@dataclass(slots=True)
class _InState:
    """What a chunk stream remembers from its previous chunk header."""

    timestamp: int = 0  # of the last message started on this chunk stream
    delta: int = 0  # fmt 1/2 delta, or fmt 0 timestamp (spec: a following fmt 3 reuses it)
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False  # the last header's timestamp field was 0xFFFFFF
    payload: bytearray = field(default_factory=bytearray)  # of the message in progress


class ChunkDecoder:
    """Chunk stream → messages. `feed()` may be called with any split of the byte stream."""

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE, max_pending: int = MAX_PENDING):
        self.chunk_size = chunk_size
        self.max_pending = max_pending
        self._buf = bytearray()
        self._streams: dict[int, _InState] = {}
        self._pending = 0

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        out: list[Message] = []
        pos = 0
        while True:
            result = self._chunk(pos)
            if result is None:
                break
            pos, message = result
            if message is not None:
                self._control(message)
                out.append(message)
        del self._buf[:pos]
        return out

    def set_chunk_size(self, size: int) -> None:
        if size & 0x80000000 or size == 0:
            raise RtmpProtocolError(f"invalid chunk size {size} (1..0x7FFFFFFF)")
        self.chunk_size = min(size, CHUNK_SIZE_CAP)

    def abort(self, csid: int) -> None:
        """Drop the partly received message on `csid` (Abort Message, type 2)."""
        state = self._streams.get(csid)
        if state is not None and state.payload:
            self._pending -= len(state.payload)
            state.payload = bytearray()

    def _control(self, message: Message) -> None:
        if message.csid != 2 or message.stream_id != 0:
            return  # protocol control messages travel on csid 2, stream 0 (section 5.4)
        if message.type_id == SET_CHUNK_SIZE:
            self.set_chunk_size(payload_u32(message, "Set Chunk Size"))
        elif message.type_id == ABORT:
            self.abort(payload_u32(message, "Abort"))

    def _chunk(self, pos: int) -> tuple[int, Message | None] | None:
        """Read one chunk at `pos`: None if it is not all there yet, else the position after it
        and the message it completed (if any)."""
        buf = self._buf
        end = len(buf)
        if pos >= end:
            return None
        b0 = buf[pos]
        fmt, csid = b0 >> 6, b0 & 0x3F
        p = pos + 1
        if csid == 0:
            if end < p + 1:
                return None
            csid = 64 + buf[p]
            p += 1
        elif csid == 1:
            if end < p + 2:
                return None
            csid = 64 + buf[p] + (buf[p + 1] << 8)
            p += 2
        header_len = (11, 7, 3, 0)[fmt]
        if end < p + header_len:
            return None
        state = self._streams.get(csid)
        if state is None:
            if fmt != 0:
                raise RtmpProtocolError(f"chunk stream {csid} starts with a type {fmt} header")
            state = self._streams[csid] = _InState()
        continuing = bool(state.payload)
        if fmt != 3 and continuing:
            raise RtmpProtocolError(
                f"chunk stream {csid}: new type {fmt} header before the message in progress "
                f"({len(state.payload)} of {state.length} bytes) was complete")

        ts_field = 0
        if fmt <= 2:
            ts_field = int.from_bytes(buf[p:p + 3], "big")
        if fmt <= 1:
            length = int.from_bytes(buf[p + 3:p + 6], "big")
            type_id = buf[p + 6]
        if fmt == 0:
            (stream_id,) = struct.unpack_from("<I", buf, p + 7)
        p += header_len

        extended = ts_field == EXTENDED if fmt <= 2 else state.extended
        if extended:
            if end < p + 4:
                return None
            ext_value = int.from_bytes(buf[p:p + 4], "big")
            p += 4

        # The header is complete; the payload decides whether the chunk is.
        if fmt <= 1:
            msg_length = length
        else:
            msg_length = state.length
        remaining = msg_length - len(state.payload)
        take = min(remaining, self.chunk_size)
        if end < p + take:
            return None

        # Commit the header to the chunk stream's state.
        if fmt != 3:
            state.extended = extended
            value = ext_value if extended else ts_field
            if fmt == 0:
                state.timestamp = value
                state.stream_id = stream_id
            else:
                state.timestamp = (state.timestamp + value) & 0xFFFFFFFF
            state.delta = value
            if fmt <= 1:
                state.length, state.type_id = length, type_id
        elif not continuing:
            # fmt 3 starting a new message: same header, timestamp advanced by the last delta.
            if extended:
                state.delta = ext_value
            state.timestamp = (state.timestamp + state.delta) & 0xFFFFFFFF

        state.payload += buf[p:p + take]
        self._pending += take
        if self._pending > self.max_pending:
            raise RtmpProtocolError(
                f"more than {self.max_pending} bytes of unfinished messages")
        p += take
        if len(state.payload) < state.length:
            return p, None
        payload = bytes(state.payload)
        state.payload = bytearray()
        self._pending -= len(payload)
        return p, Message(state.type_id, payload, state.timestamp, state.stream_id, csid)


def payload_u32(message: Message, name: str) -> int:
    """The 4-byte big-endian value that starts a protocol control message."""
    if len(message.payload) < 4:
        raise RtmpProtocolError(f"{name} message of {len(message.payload)} bytes, expected 4")
    return int.from_bytes(message.payload[:4], "big")


@dataclass(slots=True)
class _OutState:
    timestamp: int
    length: int
    type_id: int
    stream_id: int


class ChunkEncoder:
    """Messages → chunks. Header compression: fmt 0 for a chunk stream's first message (or a
    new message stream id, or time going backwards), fmt 1 when length or type change, else
    fmt 2; fmt 3 for continuation chunks. Never fmt 3 for a new message, whose timestamp rule
    after a fmt 0 header is read differently by different peers."""

    def __init__(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = chunk_size
        self._streams: dict[int, _OutState] = {}

    def encode(self, message: Message) -> bytes:
        csid = message.csid
        if not 2 <= csid <= MAX_CSID:
            raise ValueError(f"chunk stream id {csid} out of range 2..{MAX_CSID}")
        length = len(message.payload)
        if length > 0xFFFFFF:
            raise ValueError(f"message of {length} bytes (at most 0xFFFFFF)")
        ts = message.timestamp & 0xFFFFFFFF
        prev = self._streams.get(csid)
        if prev is None or prev.stream_id != message.stream_id or ts < prev.timestamp:
            fmt, value = 0, ts
        elif prev.length != length or prev.type_id != message.type_id:
            fmt, value = 1, ts - prev.timestamp
        else:
            fmt, value = 2, ts - prev.timestamp
        self._streams[csid] = _OutState(ts, length, message.type_id, message.stream_id)

        extended = value >= EXTENDED
        field3 = (EXTENDED if extended else value).to_bytes(3, "big")
        header = bytearray(_basic_header(fmt, csid))
        header += field3
        if fmt <= 1:
            header += length.to_bytes(3, "big") + bytes([message.type_id])
        if fmt == 0:
            header += struct.pack("<I", message.stream_id)
        ext = value.to_bytes(4, "big") if extended else b""
        header += ext

        out = bytearray(header)
        payload = message.payload
        size = self.chunk_size
        out += payload[:size]
        continuation = _basic_header(3, csid) + ext
        for offset in range(size, length, size):
            out += continuation
            out += payload[offset:offset + size]
        return bytes(out)


def _basic_header(fmt: int, csid: int) -> bytes:
    if csid < 64:
        return bytes([fmt << 6 | csid])
    if csid < 320:
        return bytes([fmt << 6, csid - 64])
    return bytes([fmt << 6 | 1]) + (csid - 64).to_bytes(2, "little")


# Protocol control and user control messages the server sends (section 5.4, 7.1.7).

def set_chunk_size(size: int) -> Message:
    return Message(SET_CHUNK_SIZE, struct.pack(">I", size))


def acknowledgement(sequence: int) -> Message:
    return Message(ACKNOWLEDGEMENT, struct.pack(">I", sequence & 0xFFFFFFFF))


def window_ack_size(size: int) -> Message:
    return Message(WINDOW_ACK_SIZE, struct.pack(">I", size))


def set_peer_bandwidth(size: int, limit_type: int = 2) -> Message:
    """limit_type: 0 hard, 1 soft, 2 dynamic."""
    return Message(SET_PEER_BANDWIDTH, struct.pack(">IB", size, limit_type))


def user_control(event: int, value: int) -> Message:
    return Message(USER_CONTROL, struct.pack(">HI", event, value & 0xFFFFFFFF))
