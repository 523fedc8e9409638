"""Results hidden until the speaker reveals them, over the API and the socket, on SQLite
and on Redis."""

import json

import pytest

from server import Config
from tests.support import receive_json, receive_type, send_json


@pytest.fixture
def config(polls_on) -> Config:
    """The test's application with its polls on SQLite, then on Redis (``polls_on``)."""
    return Config(**polls_on)


async def create(client, **fields) -> dict:
    """Create a poll through the API; its JSON with the manage token."""
    body = {"title": "Secret?", "options": ["a", "b"], "one_vote_per_voter": False, **fields}
    response = await client.fetch(
        "/api/polls", method="POST", headers={"Content-Type": "application/json"},
        body=json.dumps(body))
    return json.loads(response.body)


async def test_hidden_results_reach_no_page_until_revealed(http_server_client, ws_connect):
    """While hidden, the poll frame and every tally carry the total but no counts; the
    reveal sends every page the counts, and later tallies carry them."""
    poll = await create(http_server_client, results="hidden")
    assert poll["results"] == "hidden" and poll["revealed"] is False
    conn = await ws_connect(f"/ws/vote/{poll['id']}")
    first = await receive_json(conn)
    assert [option["votes"] for option in first["poll"]["options"]] == [None, None]
    await send_json(conn, {"type": "vote", "option": "2"})
    tally = await receive_type(conn, "tally")
    assert tally["votes"] is None and tally["total"] == 1
    voted = await receive_type(conn, "voted")
    assert voted["tally"]["votes"] is None

    response = await http_server_client.fetch(
        f"/api/polls/{poll['id']}/reveal", method="POST", body="",
        headers={"Authorization": f"Bearer {poll['manage_token']}"})
    assert json.loads(response.body)["revealed"] is True
    revealed = await receive_type(conn, "revealed")
    assert revealed == {"type": "revealed", "poll": poll["id"], "votes": {"1": 0, "2": 1},
                        "total": 1}
    await send_json(conn, {"type": "vote", "option": "1"})
    assert (await receive_type(conn, "tally"))["votes"] == {"1": 1, "2": 1}


async def test_only_the_owner_reads_hidden_counts_and_reveals(http_server_client):
    """GET /api/polls/<id> hides the counts unless the manage token comes with it; a reveal
    without the token is 403 not_owner; a bad results value is 400 bad_results."""
    poll = await create(http_server_client, results="hidden")
    await http_server_client.fetch(
        f"/api/polls/{poll['id']}/vote", method="POST", body='{"option": "1"}',
        headers={"Content-Type": "application/json"})
    public = json.loads((await http_server_client.fetch(f"/api/polls/{poll['id']}")).body)
    assert [o["votes"] for o in public["options"]] == [None, None] and public["total"] == 1
    owned = json.loads((await http_server_client.fetch(
        f"/api/polls/{poll['id']}",
        headers={"Authorization": f"Bearer {poll['manage_token']}"})).body)
    assert [o["votes"] for o in owned["options"]] == [1, 0]
    refused = await http_server_client.fetch(
        f"/api/polls/{poll['id']}/reveal", method="POST", body="", raise_error=False)
    assert refused.code == 403
    bad = await http_server_client.fetch(
        "/api/polls", method="POST", headers={"Content-Type": "application/json"},
        body=json.dumps({"title": "x", "options": ["a", "b"], "results": "later"}),
        raise_error=False)
    assert bad.code == 400 and json.loads(bad.body)["error"]["code"] == "bad_results"
