"""The shared counter across two real ``server.py`` processes on one real ``redis-server``,
or a Redis Cluster (tests/cluster.py): the state and the fan-out of an app are shared, as
the README says."""

import json

from tornado.httpclient import AsyncHTTPClient

from tests.cluster import on_both_redis
from tests.eventstream import EventStream
from tests.support import receive_json


@on_both_redis
async def test_an_increment_on_process_a_reaches_a_socket_and_a_stream_on_b(cluster, ws_open):
    """An increment POSTed to process A reaches a socket and a stream on process B, with the
    value A answered."""
    a, b = await cluster.start(2)
    conn = await ws_open(b.ws_url("/ws/counter/processes"))
    assert (await receive_json(conn))["value"] == 0
    stream = await EventStream.open(b.port, "/sse/counter/processes")
    try:
        assert (await stream.frame())["value"] == 0
        response = await AsyncHTTPClient().fetch(
            a.url("/api/counter/processes"), method="POST",
            headers={"Content-Type": "application/json"},
            body=json.dumps({"type": "increment", "by": 3}))
        frame = json.loads(response.body)
        assert frame == {"type": "count", "name": "processes", "value": 3}
        assert await receive_json(conn) == frame
        assert await stream.frame() == frame
    finally:
        stream.close()
