"""Voting without a socket: ``POST /api/polls/<id>/vote``, on SQLite and on Redis."""

import json

import pytest

from server import Config
from tests.support import receive_json, receive_type

ONE_VOTE = {"title": "Pick one", "options": ["a", "b"]}


@pytest.fixture
def config(polls_on) -> Config:
    """The test's application with its polls on SQLite, then on Redis (``polls_on``)."""
    return Config(**polls_on)


async def create(client, **fields) -> dict:
    """Create a poll through the API; its JSON with the manage token."""
    response = await client.fetch(
        "/api/polls", method="POST", headers={"Content-Type": "application/json"},
        body=json.dumps({**ONE_VOTE, **fields}),
    )
    return json.loads(response.body)


async def voter(client, poll_id: str) -> dict[str, str]:
    """The Cookie header a browser sends after loading the poll page."""
    response = await client.fetch(f"/vote/{poll_id}")
    return {"Cookie": response.headers["Set-Cookie"].split(";")[0]}


async def vote(client, poll_id: str, body, cookie=None, content_type="application/json"):
    """POST a vote; the response, whatever its status."""
    return await client.fetch(
        f"/api/polls/{poll_id}/vote", method="POST",
        body=body if isinstance(body, str) else json.dumps(body),
        headers={"Content-Type": content_type, **(cookie or {})}, raise_error=False,
    )


def error_code(response) -> str:
    return json.loads(response.body)["error"]["code"]


async def test_a_posted_vote_is_answered_with_the_tally_that_counts_it(http_server_client):
    """A vote POSTed with the voter cookie answers 200 and the voted frame, its tally
    counting the vote."""
    poll = await create(http_server_client)
    cookie = await voter(http_server_client, poll["id"])
    response = await vote(http_server_client, poll["id"], {"option": "2"}, cookie)
    assert response.code == 200
    assert json.loads(response.body) == {
        "type": "voted", "option": "2", "options": ["2"],
        "tally": {"type": "tally", "poll": poll["id"], "votes": {"1": 0, "2": 1}, "total": 1},
    }


async def test_a_posted_vote_reaches_the_sockets_of_the_poll(http_server_client, ws_connect):
    """A page on the socket sees the tally of a vote cast over HTTP."""
    poll = await create(http_server_client)
    conn = await ws_connect(f"/ws/vote/{poll['id']}")
    assert (await receive_json(conn))["type"] == "poll"
    cookie = await voter(http_server_client, poll["id"])
    assert (await vote(http_server_client, poll["id"], {"option": "1"}, cookie)).code == 200
    tally = await receive_type(conn, "tally")
    assert tally["votes"] == {"1": 1, "2": 0}


async def test_the_same_voter_votes_once_over_http_and_the_socket(
    http_server_client, ws_connect
):
    """A voter who voted over HTTP is refused with 409 already_voted over HTTP, and with
    the same code on the socket."""
    poll = await create(http_server_client)
    cookie = await voter(http_server_client, poll["id"])
    assert (await vote(http_server_client, poll["id"], {"option": "1"}, cookie)).code == 200
    again = await vote(http_server_client, poll["id"], {"option": "2"}, cookie)
    assert again.code == 409 and error_code(again) == "already_voted"
    conn = await ws_connect(f"/ws/vote/{poll['id']}", cookie)
    first = await receive_json(conn)
    assert first["voted"] == "1"
    await conn.write_message(json.dumps({"type": "vote", "option": "2"}))
    assert (await receive_type(conn, "error"))["code"] == "already_voted"


async def test_a_closed_poll_refuses_a_posted_vote_with_403(http_server_client):
    """After the creator closes the poll a POSTed vote is 403 poll_closed."""
    poll = await create(http_server_client)
    await http_server_client.fetch(
        f"/api/polls/{poll['id']}/close", method="POST", body="",
        headers={"Authorization": f"Bearer {poll['manage_token']}"})
    cookie = await voter(http_server_client, poll["id"])
    response = await vote(http_server_client, poll["id"], {"option": "1"}, cookie)
    assert response.code == 403 and error_code(response) == "poll_closed"


@pytest.mark.parametrize("body, status, code", [
    ({"option": "9"}, 400, "no_such_option"),
    ({"option": 1}, 400, "bad_request"),
    ({}, 400, "bad_request"),
    ([], 400, "bad_request"),
    ("{nope", 400, "bad_json"),
])
async def test_bad_votes_are_refused_by_code(http_server_client, body, status, code):
    """An unknown option, an option that is not a string, a body that is not an object or
    not JSON are refused with their codes."""
    poll = await create(http_server_client)
    cookie = await voter(http_server_client, poll["id"])
    response = await vote(http_server_client, poll["id"], body, cookie)
    assert response.code == status and error_code(response) == code


async def test_refusals_without_a_cookie_an_unknown_poll_or_a_form_body(http_server_client):
    """No voter cookie on a one-vote poll is 400 no_voter_id, an unknown poll 404
    no_such_poll, a form body 415."""
    poll = await create(http_server_client)
    response = await vote(http_server_client, poll["id"], {"option": "1"})
    assert response.code == 400 and error_code(response) == "no_voter_id"
    response = await vote(http_server_client, "nosuchpoll", {"option": "1"})
    assert response.code == 404 and error_code(response) == "no_such_poll"
    cookie = await voter(http_server_client, poll["id"])
    response = await vote(http_server_client, poll["id"], "option=1", cookie,
                          content_type="application/x-www-form-urlencoded")
    assert response.code == 415


async def test_a_changed_vote_moves_over_the_socket_and_http(http_server_client, ws_connect):
    """In a poll that allows changes, a voter's vote over the socket, then over HTTP, moves
    its one vote; a multiple-choice ballot of more than max_choices is too_many_choices."""
    poll = await create(http_server_client, allow_change=True, max_choices=2)
    cookie = await voter(http_server_client, poll["id"])
    conn = await ws_connect(f"/ws/vote/{poll['id']}", cookie)
    await receive_json(conn)
    await conn.write_message(json.dumps({"type": "vote", "options": ["1", "2"]}))
    voted = await receive_type(conn, "voted")
    assert voted["options"] == ["1", "2"] and voted["tally"]["votes"] == {"1": 1, "2": 1}
    response = await vote(http_server_client, poll["id"], {"option": "2"}, cookie)
    assert json.loads(response.body)["tally"]["votes"] == {"1": 0, "2": 1}
    response = await vote(http_server_client, poll["id"], {"options": ["1", "2", "2"]}, cookie)
    assert response.code == 400 and error_code(response) == "too_many_choices"
    page = (await http_server_client.fetch(f"/vote/{poll['id']}", headers=cookie)).body
    assert b"&quot;choices&quot;: [&quot;2&quot;]" in page
