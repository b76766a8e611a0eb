"""RTMP ingest: a sans-IO protocol stack (handshake, chunks, AMF0, FLV tags, session) and a
thin asyncio server that hands what publishers send to a `PublishGate`'s sinks."""

from .chunks import RtmpProtocolError
from .server import RtmpServer
from .session import ServerSession

__all__ = ["RtmpProtocolError", "RtmpServer", "ServerSession"]
