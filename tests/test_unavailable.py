"""A poll store that does not answer makes HTTP requests a 503 to retry, never a 500."""

import json

import pytest
import tornado.web
from tornado.httpclient import HTTPClientError

from realtime.pubsub.hub import Hub
from realtime.votes.redisstore import RedisPollStore
from server import Config, make_app
from tests.support import connect, free_port


@pytest.fixture
def app(hub: Hub, tmp_path) -> tornado.web.Application:
    """The server with its polls on a Redis that is not there (a closed loopback port)."""
    store = RedisPollStore(f"redis://127.0.0.1:{free_port()}/0", timeout=1.0)
    return make_app(Config(hub=hub, data_dir=str(tmp_path / "data"), polls=store))


async def test_the_api_answers_503_unavailable(http_server_client):
    """GET /api/polls/<id> with the store down is a JSON 503 `unavailable` with Retry-After."""
    with pytest.raises(HTTPClientError) as answer:
        await http_server_client.fetch("/api/polls/demo")
    assert answer.value.code == 503
    assert answer.value.response.headers["Retry-After"] == "5"
    assert json.loads(answer.value.response.body)["error"]["code"] == "unavailable"


async def test_a_poll_page_answers_503(http_server_client):
    """The poll's page with the store down is a 503 error page, not a 500."""
    with pytest.raises(HTTPClientError) as answer:
        await http_server_client.fetch("/vote/demo")
    assert answer.value.code == 503
    assert b"Traceback" not in answer.value.response.body


async def test_the_vote_socket_handshake_answers_503(http_server_client):
    """Opening a vote socket with the store down is refused with 503, to retry."""
    with pytest.raises(HTTPClientError) as answer:
        await connect(http_server_client, "/ws/vote/demo")
    assert answer.value.code == 503
