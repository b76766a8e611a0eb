"""One RTMP publisher connection, server side, as a sans-IO state machine (no sockets, no clock).

    session = ServerSession()
    events = session.receive(data)       # bytes from the socket → events
    sock.send(session.data_to_send())    # whatever the session has to say
    # on PublishRequested: session.accept_publish() or session.refuse_publish(code, text)

What an encoder (ffmpeg, OBS/librtmp) sends, and what it gets back:

    handshake C0 C1 C2                    S0 S1 S2
    connect(app, tcUrl)                   Window Ack Size, Set Peer Bandwidth, Set Chunk Size,
                                          _result(NetConnection.Connect.Success)   → Connected
    releaseStream(key), FCPublish(key)    _result(null, undefined) each
    createStream                          _result(null, stream id)
    publish(key?query, "live")            → PublishRequested; then on accept_publish():
                                          StreamBegin, onFCPublish (after an FCPublish),
                                          onStatus(NetStream.Publish.Start); on
                                          refuse_publish(): onStatus(level error), closed
    @setDataFrame(onMetaData, {...})      → Metadata
    audio / video messages                → TrackConfig / Frame (flv.py)
    FCUnpublish                           onFCUnpublish, _result
    deleteStream / closeStream            → Unpublished

Protocol control: the client's Set Chunk Size and Abort act in the chunk decoder; its Window
Acknowledgement Size makes us send an Acknowledgement every that many received bytes; a
User Control ping request gets a ping response. Anything the protocol does not allow raises
`RtmpProtocolError`, after which the session is closed and the connection should be dropped.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..frames import Frame, TrackConfig
from . import amf0, chunks
from .chunks import ChunkDecoder, ChunkEncoder, Message, RtmpProtocolError
from .flv import FlvDemuxer
from .handshake import ServerHandshake

log = logging.getLogger("mediaorigin.ingest.rtmp")

CHUNK_SIZE = 4096  # what we announce for our own messages (they are all small)
WINDOW_ACK_SIZE = 5_000_000
PEER_BANDWIDTH = 5_000_000
CSID_COMMAND = 3  # _result / _error
CSID_STREAM = 5  # onStatus and other messages on a media stream


@dataclass(frozen=True, slots=True)
class Connected:
    app: str  # without any ?query
    app_query: str  # what followed '?' in connect's app ('' if nothing)
    tc_url: str


@dataclass(frozen=True, slots=True)
class PublishRequested:
    """Answer with `accept_publish()` or `refuse_publish()`; until then media is still
    reported (the driver decides what to do with it)."""

    app: str
    stream_key: str  # the publish name without any ?query
    query: str  # what followed '?' in the publish name ('' if nothing)
    publish_type: str  # "live", "record" or "append"
    app_query: str = ""


@dataclass(frozen=True, slots=True)
class Metadata:
    """onMetaData from @setDataFrame (or sent bare): encoder settings, informative only."""

    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Unpublished:
    """The publisher ended its stream (deleteStream / closeStream)."""

    stream_key: str


Event = Connected | PublishRequested | Metadata | Unpublished | TrackConfig | Frame


class State(enum.Enum):
    HANDSHAKE = "handshake"
    AWAIT_CONNECT = "await connect"
    CONNECTED = "connected"
    PUBLISH_REQUESTED = "publish requested"  # waiting for accept_publish / refuse_publish
    PUBLISHING = "publishing"
    CLOSED = "closed"


# Which commands each state takes; anything else is a protocol error (unknown commands get
# an _error reply instead, see _command). All state transitions happen in the handlers named.
_ALLOWED: dict[str, frozenset[State]] = {
    "connect": frozenset({State.AWAIT_CONNECT}),
    "releaseStream": frozenset({State.CONNECTED, State.PUBLISHING, State.PUBLISH_REQUESTED}),
    "FCPublish": frozenset({State.CONNECTED, State.PUBLISHING, State.PUBLISH_REQUESTED}),
    "createStream": frozenset({State.CONNECTED, State.PUBLISHING, State.PUBLISH_REQUESTED}),
    "publish": frozenset({State.CONNECTED}),
    "FCUnpublish": frozenset({State.CONNECTED, State.PUBLISHING, State.PUBLISH_REQUESTED}),
    "deleteStream": frozenset({State.CONNECTED, State.PUBLISHING, State.PUBLISH_REQUESTED}),
    "closeStream": frozenset({State.CONNECTED, State.PUBLISHING, State.PUBLISH_REQUESTED}),
    "play": frozenset({State.CONNECTED}),
}
_MEDIA_STATES = frozenset({State.PUBLISH_REQUESTED, State.PUBLISHING})


class ServerSession:
    """The server side of one RTMP connection that publishes (ingest only: play is refused)."""

    def __init__(self, *, chunk_size: int = CHUNK_SIZE, window_ack_size: int = WINDOW_ACK_SIZE,
                 peer_bandwidth: int = PEER_BANDWIDTH,
                 random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self.state = State.HANDSHAKE
        self.app = ""
        self.app_query = ""
        self.tc_url = ""
        self.stream_key = ""
        self.query = ""
        self._chunk_size = chunk_size
        self._window_ack_size = window_ack_size
        self._peer_bandwidth = peer_bandwidth
        self._handshake = ServerHandshake(random_bytes)
        self._decoder = ChunkDecoder()
        self._encoder = ChunkEncoder()
        self._out = bytearray()
        self._received = 0  # bytes, for Acknowledgement sequence numbers
        self._acked = 0
        self._ack_window = 0  # the client's Window Acknowledgement Size (0: none asked for)
        self._next_stream_id = 1
        self._streams: set[int] = set()
        self._publish_stream = 0
        self._fcpublish = False
        self._demuxer = FlvDemuxer()
        self._clock = {"audio": _Unwrap(), "video": _Unwrap()}

    @property
    def closed(self) -> bool:
        """True once the connection should end (refused publish, play, protocol error):
        send what `data_to_send()` still has, then close."""
        return self.state is State.CLOSED

    def receive(self, data: bytes) -> list[Event]:
        if self.state is State.CLOSED:
            return []  # e.g. a refused client's FCUnpublish/deleteStream on its way out
        try:
            return self._receive(data)
        except Exception:
            self.state = State.CLOSED
            raise

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def accept_publish(self) -> None:
        self._expect_publish_requested()
        sid = self._publish_stream
        self._send(chunks.user_control(chunks.STREAM_BEGIN, sid))
        if self._fcpublish:
            self._command("onFCPublish", 0, None, _status(
                "status", "NetStream.Publish.Start", "Started publishing stream."), stream=sid)
        self._command("onStatus", 0, None, _status(
            "status", "NetStream.Publish.Start", "Started publishing stream."), stream=sid)
        self.state = State.PUBLISHING

    def refuse_publish(self, code: str, description: str) -> None:
        """Tell the client why with onStatus level "error", then the session is closed.

        `code` should be an RTMP status code (NetStream.Publish.BadName when the key is wrong
        or already live); any other code is sent as BadName with it in the description."""
        self._expect_publish_requested()
        if not code.startswith("NetStream."):
            code, description = "NetStream.Publish.BadName", f"{code}: {description}"
        self._command("onStatus", 0, None, _status("error", code, description),
                      stream=self._publish_stream)
        self.state = State.CLOSED

    # --- bytes in ------------------------------------------------------------------------

    def _receive(self, data: bytes) -> list[Event]:
        self._received += len(data)
        events: list[Event] = []
        if self.state is State.HANDSHAKE:
            data = self._handshake.feed(data)
            self._out += self._handshake.data_to_send()
            if not self._handshake.done:
                return events
            self.state = State.AWAIT_CONNECT
        for message in self._decoder.feed(data):
            self._message(message, events)
            if self.state is State.CLOSED:
                return events
        if self._ack_window and self._received - self._acked >= self._ack_window:
            self._acked = self._received
            self._send(chunks.acknowledgement(self._received))
        return events

    def _message(self, msg: Message, events: list[Event]) -> None:
        t = msg.type_id
        if t in (chunks.AUDIO, chunks.VIDEO):
            self._media(msg, events)
        elif t in (chunks.COMMAND_AMF0, chunks.COMMAND_AMF3):
            self._on_command(msg, events)
        elif t in (chunks.DATA_AMF0, chunks.DATA_AMF3):
            self._on_data(msg, events)
        elif t == chunks.AGGREGATE:
            for sub in _split_aggregate(msg):
                self._message(sub, events)
        elif t == chunks.WINDOW_ACK_SIZE:
            self._ack_window = chunks.payload_u32(msg, "Window Acknowledgement Size")
        elif t == chunks.USER_CONTROL:
            if len(msg.payload) < 2:
                raise RtmpProtocolError("User Control message without an event type")
            event = int.from_bytes(msg.payload[:2], "big")
            if event == chunks.PING_REQUEST:
                value = int.from_bytes(msg.payload[2:6], "big")
                self._send(chunks.user_control(chunks.PING_RESPONSE, value))
        # Set Chunk Size and Abort acted in the decoder; Acknowledgement, Set Peer Bandwidth
        # (the client limiting what we send, which is next to nothing) and shared objects
        # need no answer.

    def _media(self, msg: Message, events: list[Event]) -> None:
        if self.state not in _MEDIA_STATES or msg.stream_id != self._publish_stream:
            return  # media on a stream nobody publishes: nothing to hand it to
        kind = "video" if msg.type_id == chunks.VIDEO else "audio"
        ts = self._clock[kind](msg.timestamp)
        if kind == "video":
            item = self._demuxer.video(ts, msg.payload)
        else:
            item = self._demuxer.audio(ts, msg.payload)
        if item is not None:
            events.append(item)

    def _on_data(self, msg: Message, events: list[Event]) -> None:
        payload = msg.payload
        if msg.type_id == chunks.DATA_AMF3:
            if not payload or payload[0] != 0:
                return  # AMF3 metadata: informative only, not worth an AMF3 decoder
            payload = payload[1:]
        values = amf0.decode(payload)
        if values[:1] == ["@setDataFrame"]:
            values = values[1:]
        if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
            events.append(Metadata(dict(values[1])))

    # --- commands ------------------------------------------------------------------------

    def _on_command(self, msg: Message, events: list[Event]) -> None:
        payload = msg.payload
        if msg.type_id == chunks.COMMAND_AMF3:
            if not payload or payload[0] != 0:
                raise RtmpProtocolError("AMF3-encoded command (only AMF0 is supported)")
            payload = payload[1:]
        values = amf0.decode(payload)
        if not values or not isinstance(values[0], str):
            raise RtmpProtocolError(f"command message without a name: {values[:1]!r}")
        name = values[0]
        txn = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        args = values[2:]
        if self.state is State.AWAIT_CONNECT and name != "connect":
            raise RtmpProtocolError(f"command {name!r} before connect")
        allowed = _ALLOWED.get(name)
        if allowed is None:
            if txn:
                self._command("_error", txn, None, _status(
                    "error", "NetConnection.Call.Failed", f"Method not found ({name})."))
            return
        if self.state not in allowed:
            raise RtmpProtocolError(f"command {name!r} in state {self.state.value}")
        handler: Callable[[float, list[Any], Message, list[Event]], None] = getattr(
            self, f"_cmd_{name}")
        handler(txn, args, msg, events)

    def _cmd_connect(self, txn: float, args: list[Any], msg: Message,
                     events: list[Event]) -> None:
        obj = args[0] if args and isinstance(args[0], dict) else {}
        app = obj.get("app", "")
        tc_url = obj.get("tcUrl", "")
        if not isinstance(app, str) or not isinstance(tc_url, str):
            raise RtmpProtocolError("connect: app and tcUrl must be strings")
        app, _, self.app_query = app.partition("?")
        self.app = app.strip("/")
        self.tc_url = tc_url
        self._send(chunks.window_ack_size(self._window_ack_size))
        self._send(chunks.set_peer_bandwidth(self._peer_bandwidth, 2))
        self._send(chunks.set_chunk_size(self._chunk_size))
        self._encoder.chunk_size = self._chunk_size
        self._command("_result", txn, {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
                      _status("status", "NetConnection.Connect.Success",
                              "Connection succeeded.", objectEncoding=0.0))
        self.state = State.CONNECTED
        events.append(Connected(self.app, self.app_query, self.tc_url))

    def _cmd_releaseStream(self, txn: float, args: list[Any], msg: Message,
                           events: list[Event]) -> None:
        self._command("_result", txn, None, amf0.UNDEFINED)

    def _cmd_FCPublish(self, txn: float, args: list[Any], msg: Message,
                       events: list[Event]) -> None:
        self._fcpublish = True
        self._command("_result", txn, None, amf0.UNDEFINED)

    def _cmd_createStream(self, txn: float, args: list[Any], msg: Message,
                          events: list[Event]) -> None:
        if len(self._streams) >= 8:
            raise RtmpProtocolError("more than 8 open streams on one connection")
        sid = self._next_stream_id
        self._next_stream_id += 1
        self._streams.add(sid)
        self._command("_result", txn, None, float(sid))

    def _cmd_publish(self, txn: float, args: list[Any], msg: Message,
                     events: list[Event]) -> None:
        if msg.stream_id not in self._streams:
            raise RtmpProtocolError(f"publish on stream {msg.stream_id}, never created")
        name = args[1] if len(args) > 1 else None
        kind = args[2] if len(args) > 2 and isinstance(args[2], str) else "live"
        if not isinstance(name, str):
            raise RtmpProtocolError("publish without a stream name")
        self.stream_key, _, self.query = name.partition("?")
        self._publish_stream = msg.stream_id
        self._demuxer = FlvDemuxer()
        self._clock = {"audio": _Unwrap(), "video": _Unwrap()}
        self.state = State.PUBLISH_REQUESTED
        events.append(PublishRequested(self.app, self.stream_key, self.query, kind,
                                       self.app_query))

    def _cmd_FCUnpublish(self, txn: float, args: list[Any], msg: Message,
                         events: list[Event]) -> None:
        self._command("onFCUnpublish", 0, None, _status(
            "status", "NetStream.Unpublish.Success", "Stopped publishing stream."))
        self._command("_result", txn, None, amf0.UNDEFINED)

    def _cmd_deleteStream(self, txn: float, args: list[Any], msg: Message,
                          events: list[Event]) -> None:
        # deleteStream names the stream in its argument; closeStream is sent on it.
        sid = args[1] if len(args) > 1 and isinstance(args[1], float) else msg.stream_id
        self._streams.discard(int(sid))
        if self.state in _MEDIA_STATES and int(sid) == self._publish_stream:
            self.state = State.CONNECTED
            self._publish_stream = 0
            events.append(Unpublished(self.stream_key))

    def _cmd_closeStream(self, txn: float, args: list[Any], msg: Message,
                         events: list[Event]) -> None:
        if self.state in _MEDIA_STATES and msg.stream_id == self._publish_stream:
            self.state = State.CONNECTED
            self._publish_stream = 0
            events.append(Unpublished(self.stream_key))

    def _cmd_play(self, txn: float, args: list[Any], msg: Message,
                  events: list[Event]) -> None:
        self._command("onStatus", 0, None, _status(
            "error", "NetStream.Play.Failed", "This server only takes published streams."),
            stream=msg.stream_id)
        self.state = State.CLOSED

    # --- bytes out -----------------------------------------------------------------------

    def _send(self, message: Message) -> None:
        self._out += self._encoder.encode(message)

    def _command(self, name: str, txn: float, *values: Any, stream: int = 0) -> None:
        payload = amf0.encode(name, float(txn), *values)
        csid = CSID_STREAM if stream else CSID_COMMAND
        self._send(Message(chunks.COMMAND_AMF0, payload, 0, stream, csid))

    def _expect_publish_requested(self) -> None:
        if self.state is not State.PUBLISH_REQUESTED:
            raise RuntimeError(f"no publish to answer (session is {self.state.value})")


def _status(level: str, code: str, description: str, **extra: Any) -> dict[str, Any]:
    return {"level": level, "code": code, "description": description, **extra}


class _Unwrap:
    """32-bit RTMP millisecond timestamps → a continuous int (wraps after 49.7 days; small
    steps back stay steps back)."""

    def __init__(self) -> None:
        self._raw: int | None = None
        self._value = 0

    def __call__(self, raw: int) -> int:
        if self._raw is None:
            self._value = raw
        else:
            step = (raw - self._raw) & 0xFFFFFFFF
            self._value += step if step < 0x80000000 else step - 0x100000000
        self._raw = raw
        return self._value


def _split_aggregate(msg: Message) -> list[Message]:
    """An Aggregate message (type 22): FLV tags back to back, each
    type(1) size(3) timestamp(3) timestamp-extended(1) stream id(3) body back-pointer(4).
    Sub-message times are relative to the first tag's, placed at the aggregate's timestamp."""
    data = msg.payload
    out: list[Message] = []
    pos, base = 0, None
    while pos < len(data):
        if pos + 11 > len(data):
            raise RtmpProtocolError("truncated tag header in an Aggregate message")
        type_id = data[pos]
        if type_id not in (chunks.AUDIO, chunks.VIDEO, chunks.DATA_AMF0):
            raise RtmpProtocolError(f"message type {type_id} inside an Aggregate message")
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        ts = int.from_bytes(data[pos + 4:pos + 7], "big") | data[pos + 7] << 24
        body_end = pos + 11 + size
        if body_end + 4 > len(data):
            raise RtmpProtocolError("tag body overruns an Aggregate message")
        if base is None:
            base = ts
        timestamp = (msg.timestamp + ts - base) & 0xFFFFFFFF
        out.append(Message(type_id, data[pos + 11:body_end], timestamp, msg.stream_id, msg.csid))
        pos = body_end + 4
    return out
