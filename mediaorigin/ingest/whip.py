"""WHIP ingest (RFC 9725): a browser's WebRTC publish becomes H.264/AAC frames for a sink.

    POST offer -> gate.open_publisher -> RTCPeerConnection (recvonly, non-trickle) -> answer
    each received track: recv() -> SessionClock -> encoder (worker thread) -> sink

One WhipSession per accepted offer. Whatever ends it first (DELETE, ICE/DTLS failure, a track
ending, never connecting, shutdown) closes the sink exactly once and the peer connection.
The HTTP side (whip_http.py) only parses requests and renders answers and errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aioice.ice
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc.exceptions import InternalError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError

from ..errors import ClientError
from .frames import Frame, PublishGate, PublishSink
from .reencode import AacEncoder, H264Encoder, Output, SessionClock

log = logging.getLogger(__name__)

MAX_TRACKS_PER_KIND = 1  # one camera, one microphone: what a live lecture packages


class OfferRejected(ClientError):
    """An offer we cannot answer (malformed, no usable media, unsupported codecs)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(400, code, message)


def restrict_ice_hosts(hosts: Sequence[str]) -> None:
    """Make aioice gather host candidates on exactly `hosts`, for every peer connection in
    this process (aioice has no per-connection setting for it). Applied once per process;
    an empty `hosts` leaves aioice alone, other hosts later replace the first (last wins).

    - aioice asks the module function `aioice.ice.get_host_addresses()` for the addresses to
      gather on: every address of the machine, never 127.0.0.1. An origin must choose (its
      public address, or loopback in tests and behind a local relay), so that function is
      replaced by one returning `hosts`.
    - A socket on a loopback address then also ignores datagrams from other addresses. A
      browser on the same machine checks from each of its interfaces; answering the one on
      its LAN address would teach aioice a peer-reflexive candidate there and send checks and
      media to it: loopback-only must mean only loopback is ever talked to.
    """
    addresses = [str(ipaddress.ip_address(h.strip())) for h in hosts if h.strip()]
    if not addresses:
        return
    current = getattr(aioice.ice.get_host_addresses, "mediaorigin_hosts", None)
    if current == addresses:
        return
    if current is not None:
        log.warning("ICE host addresses change from %s to %s", current, addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in addresses if (use_ipv6 if ":" in a else use_ipv4)]

    setattr(get_host_addresses, "mediaorigin_hosts", addresses)  # noqa: B010
    aioice.ice.get_host_addresses = get_host_addresses

    protocol = aioice.ice.StunProtocol
    if getattr(protocol.datagram_received, "mediaorigin_loopback", False):
        return
    received = protocol.datagram_received

    def datagram_received(self: Any, data: bytes | str, addr: tuple[Any, ...]) -> None:
        local = getattr(self, "local_candidate", None)
        if local is not None and _is_loopback(local.host) and not _is_loopback(addr[0]):
            return
        received(self, data, addr)

    setattr(datagram_received, "mediaorigin_loopback", True)  # noqa: B010
    protocol.datagram_received = datagram_received  # type: ignore[method-assign]


def _is_loopback(host: str) -> bool:
    """Cheap (per packet): 127.0.0.0/8 or ::1, as aioice writes them."""
    return host.startswith("127.") or host == "::1"


@dataclass(eq=False)
class WhipSession:
    id: str
    live_id: str
    token_sha256: bytes
    pc: RTCPeerConnection
    sink: PublishSink
    clock: SessionClock = field(default_factory=SessionClock)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    created: float = field(default_factory=time.monotonic)
    first_frame: float | None = None  # monotonic time the sink got its first frame
    ending: bool = False  # a close is scheduled
    closed: bool = False
    watchdog: asyncio.TimerHandle | None = None


class WhipEndpoint:
    """The WHIP sessions of one origin.

    hosts: local addresses ICE gathers candidates on (empty: all, aioice's default). When
    they are all loopback the endpoint talks to loopback peers only: the offer's other
    candidates are dropped (see also restrict_ice_hosts)."""

    def __init__(self, gate: PublishGate, hosts: list[str], keyframe_interval: float = 2.0,
                 connect_timeout: float = 20.0, preset: str = "veryfast") -> None:
        self.gate = gate
        self.hosts = [h.strip() for h in hosts if h.strip()]
        self.keyframe_interval = keyframe_interval
        self.connect_timeout = connect_timeout
        self.preset = preset
        restrict_ice_hosts(self.hosts)
        self._loopback_only = bool(self.hosts) and all(
            ipaddress.ip_address(h).is_loopback for h in self.hosts)
        self._sessions: dict[str, WhipSession] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    async def offer(self, live_id: str, token: str, sdp: str, remote: str) -> tuple[str, str]:
        """Authorize, answer the offer (all our candidates in it) and start receiving.

        Returns (session id, answer SDP). Raises PublishRefused from the gate, OfferRejected
        for an offer we cannot take."""
        sink = await self.gate.open_publisher("whip", live_id, token, remote)
        try:
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # no STUN: host candidates
        except BaseException:
            sink.close()
            raise
        session = WhipSession(secrets.token_urlsafe(16), live_id, _sha256(token), pc, sink)
        self._sessions[session.id] = session
        try:
            answer = await self._answer(session, sdp, _media_kinds(sdp))
        except (ValueError, InternalError, InvalidStateError, OperationError) as e:
            await self._close(session)
            raise OfferRejected("bad_offer", f"cannot answer this offer: {e}") from e
        except BaseException:
            await self._close(session)
            raise
        if session.closed:  # failed while gathering
            raise OfferRejected("bad_offer", "the peer connection closed while answering")
        session.watchdog = asyncio.get_running_loop().call_later(
            self.connect_timeout, self._expire_unconnected, session)
        log.info("whip %s: session %s from %s", live_id, session.id, remote)
        return session.id, answer

    def token_matches(self, live_id: str, session_id: str, token: str) -> bool | None:
        """Whether `token` is the one the session was published with (None: no such session)."""
        session = self._sessions.get(session_id)
        if session is None or session.live_id != live_id:
            return None
        return hmac.compare_digest(session.token_sha256, _sha256(token))

    async def delete(self, live_id: str, session_id: str) -> bool:
        """End a session (the publisher's DELETE). False when there is no such session."""
        session = self._sessions.get(session_id)
        if session is None or session.live_id != live_id:
            return False
        log.info("whip %s: session %s deleted", live_id, session_id)
        await self._close(session)
        return True

    async def close_all(self) -> None:
        """End every session (shutdown)."""
        await asyncio.gather(*(self._close(s) for s in list(self._sessions.values())))
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # --- one session ---------------------------------------------------------------------

    async def _answer(self, session: WhipSession, sdp: str, kinds: list[str]) -> str:
        pc = session.pc
        if "audio" in kinds:
            # Created before the offer is applied so it takes the audio section: Opus only.
            audio = pc.addTransceiver("audio", direction="recvonly")
            codecs = RTCRtpReceiver.getCapabilities("audio").codecs
            audio.setCodecPreferences([c for c in codecs if c.mimeType.lower() == "audio/opus"])

        tracks: list[MediaStreamTrack] = []

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            tracks.append(track)
            self._start_track(session, track)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._end(session, f"connection {pc.connectionState}")

        offer = self._reachable(sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        if not tracks:
            raise OfferRejected("no_media", "the offer sends neither audio nor video")
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)  # gathers every candidate: WHIP without trickle
        return pc.localDescription.sdp

    def _reachable(self, sdp: str) -> str:
        """The offer as we apply it: a loopback-only server drops the other candidates (it
        talks to loopback peers only), and every media section is complete
        (`end-of-candidates`: no trickle here), so ICE fails rather than waits when none of
        the candidates works."""
        sections: list[list[str]] = [[]]
        for line in sdp.splitlines():
            if line.startswith("m="):
                sections.append([])
            if line.startswith("a=candidate:") and self._loopback_only and \
                    not _loopback_candidate(line):
                continue
            sections[-1].append(line)
        for section in sections[1:]:
            if "a=end-of-candidates" not in section:
                section.append("a=end-of-candidates")
        return "\r\n".join(line for s in sections for line in s) + "\r\n"

    def _start_track(self, session: WhipSession, track: MediaStreamTrack) -> None:
        encoder: H264Encoder | AacEncoder
        if track.kind == "video":
            encoder = H264Encoder(self.keyframe_interval, preset=self.preset)
        else:
            encoder = AacEncoder()
        task = asyncio.create_task(self._pump(session, track, encoder),
                                   name=f"whip {session.id} {track.kind}")
        session.tasks.add(task)

    async def _pump(self, session: WhipSession, track: MediaStreamTrack,
                    encoder: H264Encoder | AacEncoder) -> None:
        """recv() -> encoder on a worker thread -> sink, until the track or session ends."""
        clock = session.clock.track()
        reason = f"{track.kind} track ended"
        try:
            while not session.closed:
                try:
                    frame: Any = await track.recv()
                except MediaStreamError:
                    break
                at = clock.seconds(frame.pts, frame.time_base)
                out = await asyncio.to_thread(encoder.encode, frame, at)
                if session.closed:
                    break
                self._deliver(session, out)
        except Exception:
            log.exception("whip %s: %s track failed", session.live_id, track.kind)
            reason = f"{track.kind} encoding failed"
        finally:
            self._end(session, reason)

    def _deliver(self, session: WhipSession, out: list[Output]) -> None:
        for item in out:
            if isinstance(item, Frame):
                if session.first_frame is None:
                    session.first_frame = time.monotonic()
                    log.info("whip %s: first frame %.3f s after the offer", session.live_id,
                             session.first_frame - session.created)
                session.sink.on_frame(item)
            else:
                session.sink.on_track(item)

    def _expire_unconnected(self, session: WhipSession) -> None:
        if session.pc.connectionState != "connected":
            self._end(session, f"not connected after {self.connect_timeout:g} s")

    def _end(self, session: WhipSession, reason: str) -> None:
        """Close a session from a callback or one of its own tasks (not awaiting them)."""
        if session.closed or session.ending:
            return
        session.ending = True
        log.info("whip %s: session %s ends: %s", session.live_id, session.id, reason)
        task = asyncio.create_task(self._close(session), name=f"whip {session.id} close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, session: WhipSession) -> None:
        if session.closed:
            return
        session.closed = True
        self._sessions.pop(session.id, None)
        if session.watchdog is not None:
            session.watchdog.cancel()
        try:
            session.sink.close()
        except Exception:
            log.exception("whip %s: sink close failed", session.live_id)
        current = asyncio.current_task()
        others = [t for t in session.tasks if t is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await session.pc.close()


def _media_kinds(sdp: str) -> list[str]:
    """The kinds of the offer's media sections, after checking WHIP can take them."""
    kinds = [line[2:].split(" ", 1)[0] for line in sdp.splitlines() if line.startswith("m=")]
    if not kinds or not sdp.startswith("v=0"):
        raise OfferRejected("bad_offer", "not an SDP offer")
    for kind in ("audio", "video"):
        if kinds.count(kind) > MAX_TRACKS_PER_KIND:
            raise OfferRejected("too_many_tracks",
                                f"WHIP ingest takes at most one {kind} track")
    if "audio" not in kinds and "video" not in kinds:
        raise OfferRejected("no_media", "the offer has neither audio nor video")
    return kinds


def _loopback_candidate(line: str) -> bool:
    """a=candidate:<foundation> <component> <transport> <priority> <address> <port> ..."""
    parts = line.split()
    try:
        return len(parts) > 5 and ipaddress.ip_address(parts[4]).is_loopback
    except ValueError:  # an mDNS name (.local): not loopback
        return False


def _sha256(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
