"""Webhooks: the signing contract, then delivery to a real receiver on 127.0.0.1.

The receiver verifies every request the way a subscriber would (over the raw body) and can be
told, per path, to answer the next requests with 500, 503/429 + Retry-After, 400, or to hang.
Tests synchronise on what the receiver has seen and on `stop()`, which returns as soon as
nothing more can be delivered; every wait is bounded so a bug fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from mediaorigin.library import webhooks
from mediaorigin.library.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    WebhookEvent,
    WebhookSender,
    sign,
    verify,
)

SECRET = b"whsec-test-0123456789"
BODY = b'{"id":"e1","type":"media.ready","created":1700000000,"data":{"media_id":"m1"}}'
T = 1_700_000_000
WAIT = 5.0  # upper bound on any wait: only reached when something is broken


# --- signing -----------------------------------------------------------------------------


def test_sign_verify_round_trip() -> None:
    header = sign(SECRET, BODY, T)
    assert re.fullmatch(r"t=1700000000,v1=[0-9a-f]{64}", header)
    verify(SECRET, BODY, header, now=T + 1)


def code_of(secret: bytes | list[bytes], body: bytes, header: str | None, now: float) -> str:
    with pytest.raises(SignatureError) as info:
        verify(secret, body, header, now=now)
    return info.value.code


def test_verify_rejects_tampered_body() -> None:
    header = sign(SECRET, BODY, T)
    assert code_of(SECRET, BODY.replace(b"m1", b"m2"), header, T) == "bad_signature"


def test_verify_rejects_wrong_secret() -> None:
    assert code_of(b"other", BODY, sign(SECRET, BODY, T), T) == "bad_signature"


@pytest.mark.parametrize("skew", [301, -301, 10_000])
def test_verify_rejects_stale_timestamp_either_way(skew: int) -> None:
    header = sign(SECRET, BODY, T)
    assert code_of(SECRET, BODY, header, T + skew) == "stale_signature"
    verify(SECRET, BODY, header, now=T + skew, tolerance=abs(skew))  # boundary is inclusive


HEX = "a" * 64
MALFORMED = [
    "garbage",
    f"t={T}",  # no v1
    f"v1={HEX}",  # no t
    f"t=,v1={HEX}",
    f"t=abc,v1={HEX}",
    f"t=-1,v1={HEX}",
    f"t={T}.5,v1={HEX}",
    f"t={T},t={T},v1={HEX}",  # which timestamp was signed?
    f"t={T},v1=xyz",
    f"t={T},v1={HEX[:-1]}",  # too short
    f"t={T};v1={HEX}",
    f"t={T},v1",
]


@pytest.mark.parametrize("header", MALFORMED)
def test_verify_rejects_malformed_header(header: str) -> None:
    assert code_of(SECRET, BODY, header, T) == "malformed_signature"


@pytest.mark.parametrize("header", [None, "", "  "])
def test_verify_rejects_missing_header(header: str | None) -> None:
    assert code_of(SECRET, BODY, header, T) == "missing_signature"


def test_verify_ignores_unknown_schemes() -> None:
    verify(SECRET, BODY, sign(SECRET, BODY, T) + f",v2={HEX}", now=T)


def test_rotation_two_secrets() -> None:
    old, new = b"old-secret", b"new-secret"
    # Receiver rotating: accepts either secret.
    verify([old, new], BODY, sign(old, BODY, T), now=T)
    verify([old, new], BODY, sign(new, BODY, T), now=T)
    # Sender rotating: one v1 per secret, a receiver on either secret accepts.
    both = sign([old, new], BODY, T)
    assert both.count("v1=") == 2
    verify(old, BODY, both, now=T)
    verify(new, BODY, both, now=T)
    assert code_of([b"third", b"fourth"], BODY, both, T) == "bad_signature"


def test_event_body_round_trip() -> None:
    event = WebhookEvent("media.ready", {"media_id": "m1"})
    assert re.fullmatch(r"[0-9a-f]{32}", event.id)
    body = bytes(event)
    assert b" " not in body  # compact
    assert WebhookEvent.parse(body) == event


@pytest.mark.parametrize("url", ["ftp://example.com/x", "example.com/hook", "http://", "/hook"])
def test_sender_rejects_non_http_urls(url: str) -> None:
    with pytest.raises(ValueError):
        WebhookSender([url], SECRET)


# --- delivery ----------------------------------------------------------------------------


@dataclass
class Hit:
    name: str
    headers: dict[str, str]
    body: bytes
    signature_error: str | None


class Receiver:
    """Records every request; `plan[name]` says how to answer the next ones (then 200)."""

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.plan: dict[str, list[str]] = {}
        self.release = asyncio.Event()  # ends every "hang"
        self._arrived = asyncio.Condition()
        self.base = ""

    def url(self, name: str = "a") -> str:
        return f"{self.base}/hook/{name}"

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        try:
            verify(SECRET, body, request.headers.get(SIGNATURE_HEADER), now=time.time())
            error = None
        except SignatureError as exc:
            error = exc.code
        self.hits.append(Hit(name, dict(request.headers), body, error))
        async with self._arrived:
            self._arrived.notify_all()
        steps = self.plan.get(name, [])
        mode = steps.pop(0) if steps else "ok"
        if mode == "hang":
            await self.release.wait()
        elif mode == "503":
            return web.Response(status=503, headers={"Retry-After": "0"})
        elif mode == "429":
            return web.Response(status=429, headers={"Retry-After": "3600"})
        elif mode != "ok":
            return web.Response(status=int(mode))
        return web.Response(text="ok")

    async def wait_hits(self, n: int) -> None:
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.hits) >= n), WAIT)


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> AsyncIterator[Receiver]:
    rx = Receiver()
    app = web.Application()
    app.router.add_post("/hook/{name}", rx.handle)
    server = await aiohttp_server(app, host="127.0.0.1")
    rx.base = str(server.make_url("")).rstrip("/")
    yield rx
    rx.release.set()  # let hung handlers finish so the server closes promptly


MakeSender = Callable[..., WebhookSender]


@pytest.fixture
async def make_sender() -> AsyncIterator[MakeSender]:
    """Senders that are always stopped (and their ClientSession closed) at teardown."""
    senders: list[WebhookSender] = []

    def make(urls: list[str], **options: Any) -> WebhookSender:
        sender = WebhookSender(urls, SECRET, **options)
        senders.append(sender)
        return sender

    yield make
    for sender in senders:
        await sender.stop(drain_timeout=0)


async def drain(sender: WebhookSender, drain_timeout: float = WAIT) -> None:
    await asyncio.wait_for(sender.stop(drain_timeout=drain_timeout), drain_timeout + 2)


def event(n: int = 1) -> WebhookEvent:
    return WebhookEvent("media.ready", {"media_id": f"m{n}"})


async def test_delivery_is_signed_and_verifiable(
    receiver: Receiver, make_sender: MakeSender
) -> None:
    sender = make_sender([receiver.url()])
    ev = event()
    sender.emit(ev)
    await sender.start()
    await receiver.wait_hits(1)
    await drain(sender)

    [hit] = receiver.hits
    assert hit.signature_error is None
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers["User-Agent"] == "mediaorigin-webhooks/1"
    assert hit.headers[EVENT_HEADER] == "media.ready"
    assert re.fullmatch(r"[0-9a-f]{32}", hit.headers[DELIVERY_HEADER])
    assert WebhookEvent.parse(hit.body) == ev
    assert (sender.delivered, sender.failed, sender.dropped) == (1, 0, 0)
    [outcome] = sender.recent
    assert (outcome.event_id, outcome.url, outcome.result, outcome.attempts, outcome.ok) == (
        ev.id,
        receiver.url(),
        200,
        1,
        True,
    )


async def test_retries_until_success_with_same_delivery_id(
    receiver: Receiver, make_sender: MakeSender
) -> None:
    receiver.plan["a"] = ["500", "500"]
    sender = make_sender([receiver.url()], base_delay=0.01)
    sender.emit(event())
    await sender.start()
    await receiver.wait_hits(3)
    await drain(sender)

    assert len(receiver.hits) == 3
    assert len({hit.headers[DELIVERY_HEADER] for hit in receiver.hits}) == 1
    assert all(hit.signature_error is None for hit in receiver.hits)
    assert (sender.delivered, sender.failed) == (1, 0)
    assert [(o.result, o.attempts) for o in sender.recent] == [(200, 3)]


async def test_backoff_is_full_jitter_capped(
    receiver: Receiver, make_sender: MakeSender, monkeypatch: pytest.MonkeyPatch
) -> None:
    ceilings: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        ceilings.append((low, high))
        return 0.0

    monkeypatch.setattr(webhooks.random, "uniform", uniform)
    receiver.plan["a"] = ["500", "500", "500"]
    sender = make_sender([receiver.url()], base_delay=0.5, max_delay=1.5)
    sender.emit(event())
    await sender.start()
    await drain(sender)
    assert ceilings == [(0, 0.5), (0, 1.0), (0, 1.5)]
    assert sender.delivered == 1


@pytest.mark.parametrize(
    ("mode", "max_delay"), [("503", 300.0), ("429", 0.05)], ids=["retry-after-0", "capped"]
)
async def test_retry_after_is_honoured_and_capped(
    receiver: Receiver,
    make_sender: MakeSender,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    max_delay: float,
) -> None:
    # Backoff would wait the full ceiling (60 s, or max_delay): only Retry-After is quick.
    monkeypatch.setattr(webhooks.random, "uniform", lambda low, high: high)
    receiver.plan["a"] = [mode]
    sender = make_sender([receiver.url()], base_delay=60.0, max_delay=max_delay)
    sender.emit(event())
    await sender.start()
    await drain(sender, drain_timeout=2)
    assert len(receiver.hits) == 2
    assert sender.delivered == 1


async def test_client_error_is_permanent(receiver: Receiver, make_sender: MakeSender) -> None:
    receiver.plan["a"] = ["400"]
    sender = make_sender([receiver.url()], base_delay=0.01)
    sender.emit(event())
    await sender.start()
    await drain(sender)
    assert len(receiver.hits) == 1
    assert (sender.delivered, sender.failed) == (0, 1)
    assert [(o.result, o.attempts, o.ok) for o in sender.recent] == [(400, 1, False)]


async def test_hang_times_out_then_retries(receiver: Receiver, make_sender: MakeSender) -> None:
    receiver.plan["a"] = ["hang"]
    sender = make_sender([receiver.url()], timeout=0.2, base_delay=0.01)
    sender.emit(event())
    await sender.start()
    await receiver.wait_hits(2)
    await drain(sender)
    assert receiver.hits[0].headers[DELIVERY_HEADER] == receiver.hits[1].headers[DELIVERY_HEADER]
    assert (sender.delivered, sender.failed) == (1, 0)
    assert sender.recent[0].attempts == 2


async def test_gives_up_after_max_attempts_without_logging_secrets(
    receiver: Receiver, make_sender: MakeSender, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=webhooks.__name__)
    receiver.plan["a"] = ["500"] * 10
    sender = make_sender([receiver.url()], max_attempts=3, base_delay=0.01)
    sender.emit(event())
    await sender.start()
    await drain(sender)
    assert len(receiver.hits) == 3
    assert (sender.delivered, sender.failed) == (0, 1)
    assert [(o.result, o.attempts) for o in sender.recent] == [(500, 3)]
    assert "gave up after 3 attempts" in caplog.text
    assert SECRET.decode() not in caplog.text
    assert "v1=" not in caplog.text


async def test_connection_error_is_retried(make_sender: MakeSender) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sender = make_sender([f"http://127.0.0.1:{port}/hook"], max_attempts=2, base_delay=0.01)
    sender.emit(event())
    await sender.start()
    await drain(sender)
    assert sender.failed == 1
    [outcome] = sender.recent
    assert outcome.attempts == 2
    assert isinstance(outcome.result, str) and "Connect" in outcome.result


async def test_each_url_gets_the_event(receiver: Receiver, make_sender: MakeSender) -> None:
    sender = make_sender([receiver.url("a"), receiver.url("b")])
    ev = event()
    sender.emit(ev)
    await sender.start()
    await receiver.wait_hits(2)
    await drain(sender)
    assert sorted(hit.name for hit in receiver.hits) == ["a", "b"]
    assert {WebhookEvent.parse(hit.body).id for hit in receiver.hits} == {ev.id}
    assert len({hit.headers[DELIVERY_HEADER] for hit in receiver.hits}) == 2
    assert sender.delivered == 2


async def test_scheduled_retry_does_not_block_the_worker(
    receiver: Receiver, make_sender: MakeSender, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webhooks.random, "uniform", lambda low, high: high)
    receiver.plan["a"] = ["500"]
    sender = make_sender([receiver.url()], base_delay=60.0)
    sender.concurrency = 1  # one worker: an inline sleep would stall the second event
    first, second = event(1), event(2)
    sender.emit(first)
    await sender.start()
    await receiver.wait_hits(1)
    sender.emit(second)
    await receiver.wait_hits(2)
    assert WebhookEvent.parse(receiver.hits[1].body) == second
    await drain(sender, drain_timeout=0.5)
    assert (sender.delivered, sender.pending) == (1, 1)  # the first is still scheduled


async def test_queue_overflow_drops_oldest(
    receiver: Receiver, make_sender: MakeSender, caplog: pytest.LogCaptureFixture
) -> None:
    sender = make_sender([receiver.url()], queue_size=3)
    events = [event(n) for n in range(5)]
    for ev in events:
        sender.emit(ev)  # not started: everything waits in the queue
    assert (sender.dropped, sender.pending) == (2, 3)
    assert "webhook queue full" in caplog.text
    await sender.start()
    await drain(sender)
    assert {WebhookEvent.parse(hit.body).id for hit in receiver.hits} == {
        ev.id for ev in events[2:]
    }
    assert [o.result for o in sender.recent].count("dropped") == 2


async def test_stop_is_prompt_while_receiver_hangs(
    receiver: Receiver, make_sender: MakeSender
) -> None:
    receiver.plan["a"] = ["hang"]
    sender = make_sender([receiver.url()], timeout=30.0)
    sender.emit(event())
    await sender.start()
    await receiver.wait_hits(1)
    started = time.monotonic()
    await asyncio.wait_for(sender.stop(drain_timeout=0.3), 2)
    assert time.monotonic() - started < 1.0
    assert (sender.delivered, sender.failed, sender.pending) == (0, 0, 1)  # kept for restart
