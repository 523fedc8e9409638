"""The chat page in a real headless Chromium on one of two real server processes sharing
a real Redis (tests/cluster.py), when that process's Redis subscription is interrupted:
the page is caught up in place, or told."""

import asyncio
import re
import time

import pytest
import redis.asyncio

from tests.browser import chromium, wait_connected
from tests.support import send_json
from tests.test_browser_chat import open_chat
from tests.test_cluster_chat import ALICE, enter
from tests.test_cluster_faults import UNAVAILABLE_WITHIN, wait_health

pytestmark = pytest.mark.browser

COUNT = 20  # messages alice sends from the other process


async def stream(sender, event) -> None:
    """``COUNT`` messages, ``event()`` awaited half way."""
    for n in range(COUNT):
        if n == COUNT // 2:
            await event()
        await send_json(sender, {"type": "message", "text": f"number {n}"})
        await asyncio.sleep(0.02)


async def test_page_is_caught_up_in_place_after_its_listener_is_killed(cluster, ws_open):
    """``CLIENT KILL TYPE pubsub`` while alice on A talks: bob's page on B shows each of
    her messages once, without a reconnect or a warning."""
    a, b = await cluster.start(2)
    async with chromium() as browser, redis.asyncio.Redis.from_url(cluster.redis.url) as admin:
        bob, errors = await open_chat(browser, b.url("/chat"), "bob")
        alice, _ = await enter(ws_open, a, nick="alice", cookie=ALICE, room="browsers")
        await cluster.wait_subscribed("chat.browsers", 2)

        async def kill() -> None:
            assert await admin.client_kill_filter(_type="pubsub") == 2

        await stream(alice, kill)
        last = bob.locator("#chat-log .entry.msg", has_text=f"number {COUNT - 1}")
        await last.wait_for(timeout=10_000)
        for n in range(COUNT):
            assert await bob.locator(
                "#chat-log .entry.msg .text", has_text=re.compile(f"^number {n}$")).count() == 1, n
        assert await bob.locator("#chat-log .event.warn").count() == 0
        assert await bob.locator('#conn-state[data-state="open"]').count() == 1
        assert errors == []


async def test_page_is_told_when_redis_lost_what_it_missed(cluster, ws_open):
    """Redis killed and restarted without its data while alice on A talks: bob's page on B
    is closed (1012), reconnects with its last id and says messages may be missing."""
    a, b = await cluster.start(2)
    async with chromium() as browser:
        bob, _ = await open_chat(browser, b.url("/chat"), "bob")
        alice, _ = await enter(ws_open, a, nick="alice", cookie=ALICE, room="browsers")
        await cluster.wait_subscribed("chat.browsers", 2)
        await send_json(alice, {"type": "message", "text": "before the crash"})
        await bob.locator("#chat-log .entry.msg", has_text="before the crash").wait_for(
            timeout=10_000)

        async def crash() -> None:
            cluster.redis.kill()
            await wait_health(b, 503, time.monotonic() + UNAVAILABLE_WITHIN)
            await cluster.redis.restart()

        await stream(alice, crash)
        await bob.locator("#chat-log .event.warn", has_text="may be missing").wait_for(
            timeout=15_000)
        await wait_connected(bob)
        assert await bob.locator("#chat-log .entry.msg", has_text="before the crash").count() == 1
