"""Unlisted polls, the manage token (close, reopen, delete), their live frames, the QR code,
the field of form errors and HEAD on the vote routes."""

import json
import re
import xml.etree.ElementTree as ElementTree

import pytest
import segno
from tornado.httpclient import HTTPClientError

from server import Config, make_app
from tests.support import receive_json_except, receive_type, send_json


async def next_frame(conn):
    """The next frame besides the ``participants`` counts that come with pages opening."""
    return await receive_json_except(conn, "participants")


GOOD = {"title": "Lunch?", "options": ["Pizza", "Soup"]}
SVG = "{http://www.w3.org/2000/svg}"


async def create(client, **fields):
    """Create a poll; return its JSON, manage_token included."""
    response = await client.fetch(
        "/api/polls", method="POST", body=json.dumps({**GOOD, **fields}),
        headers={"Content-Type": "application/json"},
    )
    return json.loads(response.body)


async def manage(client, method, path, token=None, header=None):
    """Send a manage request with the token as a bearer token (or a raw header)."""
    headers = {}
    if header is not None:
        headers["Authorization"] = header
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await client.fetch(
        path, method=method, headers=headers, raise_error=False,
        body=b"" if method == "POST" else None,
    )


def error_of(response) -> dict:
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.body)["error"]


async def listed_ids(client) -> list[str]:
    return [p["id"] for p in json.loads((await client.fetch("/api/polls")).body)["polls"]]


async def test_new_polls_are_unlisted_unless_asked(http_server_client):
    """A poll is left out of GET /api/polls and /vote unless created with listed: true."""
    hidden = await create(http_server_client)
    shown = await create(http_server_client, listed=True)
    assert hidden["listed"] is False and shown["listed"] is True
    assert await listed_ids(http_server_client) == [shown["id"], "demo"]
    page = (await http_server_client.fetch("/vote")).body.decode()
    assert f'href="/vote/{shown["id"]}"' in page and hidden["id"] not in page
    # Unlisted is not secret from who has the link.
    assert (await http_server_client.fetch(f"/api/polls/{hidden['id']}")).code == 200


async def test_listed_must_be_a_boolean(http_server_client):
    """listed: "yes" is a 400 bad_listed naming the field."""
    response = await http_server_client.fetch(
        "/api/polls", method="POST", body=json.dumps({**GOOD, "listed": "yes"}),
        headers={"Content-Type": "application/json"}, raise_error=False,
    )
    assert response.code == 400
    assert error_of(response) | {"message": ""} == {
        "code": "bad_listed", "message": "", "field": "listed"}


@pytest.mark.parametrize("options, message, field", [
    (["Tea", "", "Milk"], "Option 2 is empty.", "options.1"),
    (["Tea", "Milk", " tea "], "Option 3 is the same as option 1.", "options.2"),
    (["Tea", "x" * 101], "Option 2 is too long: 101 characters, at most 100.", "options.1"),
    (["Tea", 7], "Option 2 is not text.", "options.1"),
    (["Tea"], "Give at least 2 options.", "options"),
])
async def test_form_errors_say_which_option_in_plain_words(
    http_server_client, options, message, field
):
    """A bad option is answered with a plain sentence naming it and its field index."""
    response = await http_server_client.fetch(
        "/api/polls", method="POST", body=json.dumps({**GOOD, "options": options}),
        headers={"Content-Type": "application/json"}, raise_error=False,
    )
    assert response.code == 400
    assert error_of(response) == {"code": "bad_options", "message": message, "field": field}


async def test_empty_title_error_names_the_title(http_server_client):
    """An empty question is "Write a question." on the field title."""
    response = await http_server_client.fetch(
        "/api/polls", method="POST", body=json.dumps({**GOOD, "title": "  "}),
        headers={"Content-Type": "application/json"}, raise_error=False,
    )
    assert error_of(response) == {
        "code": "bad_title", "message": "Write a question.", "field": "title"}


@pytest.mark.parametrize("header", [
    None, "", "Bearer", "Bearer wrong-token", "Basic dXNlcjpwYXNz", "bearer{token}x",
])
async def test_manage_without_the_token_is_403_not_owner(http_server_client, header):
    """Close, reopen and delete without the poll's own token answer 403 not_owner and
    change nothing."""
    poll = await create(http_server_client)
    other = await create(http_server_client)
    if header is not None:
        header = header.format(token=poll["manage_token"])
    attempts = [("POST", f"/api/polls/{poll['id']}/close"),
                ("POST", f"/api/polls/{poll['id']}/reopen"),
                ("DELETE", f"/api/polls/{poll['id']}")]
    for method, path in attempts:
        response = await manage(http_server_client, method, path, header=header)
        assert response.code == 403 and error_of(response)["code"] == "not_owner", path
        # Another poll's token is no better.
        response = await manage(http_server_client, method, path, other["manage_token"])
        assert response.code == 403 and error_of(response)["code"] == "not_owner", path
    after = json.loads((await http_server_client.fetch(f"/api/polls/{poll['id']}")).body)
    assert after["closed"] is False


async def test_demo_poll_has_no_owner(http_server_client):
    """Nobody can close or delete the demo poll through the API."""
    response = await manage(http_server_client, "DELETE", "/api/polls/demo", "anything")
    assert response.code == 403 and error_of(response)["code"] == "not_owner"


@pytest.mark.parametrize("method, path", [
    ("POST", "/api/polls/nope/close"), ("POST", "/api/polls/nope/reopen"),
    ("DELETE", "/api/polls/nope"), ("DELETE", "/api/polls/" + "x" * 200),
])
async def test_manage_unknown_poll_is_404(http_server_client, method, path):
    """Managing a poll that does not exist answers 404 no_such_poll."""
    response = await manage(http_server_client, method, path, "token")
    assert response.code == 404 and error_of(response)["code"] == "no_such_poll"


async def test_close_and_reopen_are_live_and_gate_votes(http_server_client, ws_connect):
    """Closing answers the poll with closed: true, tells every open page, and refuses votes
    with poll_closed; reopening undoes all three."""
    poll = await create(http_server_client, one_vote_per_voter=False)
    token, path = poll["manage_token"], f"/api/polls/{poll['id']}"
    conn = await ws_connect(f"/ws/vote/{poll['id']}")
    assert (await next_frame(conn))["poll"]["closed"] is False

    response = await manage(http_server_client, "POST", f"{path}/close", token)
    assert response.code == 200 and json.loads(response.body)["closed"] is True
    assert await next_frame(conn) == {"type": "closed", "poll": poll["id"]}
    assert json.loads((await http_server_client.fetch(path)).body)["closed"] is True
    await send_json(conn, {"type": "vote", "option": "1"})
    error = await receive_type(conn, "error")
    assert error["code"] == "poll_closed"
    late = await ws_connect(f"/ws/vote/{poll['id']}")
    assert (await next_frame(late))["poll"]["closed"] is True

    response = await manage(http_server_client, "POST", f"{path}/reopen", token)
    assert response.code == 200 and json.loads(response.body)["closed"] is False
    assert await next_frame(conn) == {"type": "reopened", "poll": poll["id"]}
    await send_json(conn, {"type": "vote", "option": "1"})
    assert (await receive_type(conn, "voted"))["tally"]["total"] == 1


async def test_delete_is_live_and_removes_the_poll(http_server_client, ws_connect):
    """Deleting answers 204, tells open pages, and the poll, its page and socket are gone."""
    poll = await create(http_server_client, listed=True)
    conn = await ws_connect(f"/ws/vote/{poll['id']}")
    await receive_type(conn, "poll")
    response = await manage(
        http_server_client, "DELETE", f"/api/polls/{poll['id']}", poll["manage_token"])
    assert response.code == 204 and response.body == b""
    assert await next_frame(conn) == {"type": "deleted", "poll": poll["id"]}
    for path in [f"/api/polls/{poll['id']}", f"/vote/{poll['id']}",
                 f"/vote/{poll['id']}/present", f"/vote/{poll['id']}/qr.svg"]:
        assert (await http_server_client.fetch(path, raise_error=False)).code == 404, path
    assert poll["id"] not in await listed_ids(http_server_client)
    with pytest.raises(HTTPClientError) as refused:
        await ws_connect(f"/ws/vote/{poll['id']}")
    assert refused.value.code == 404
    await send_json(conn, {"type": "vote", "option": "1"})
    assert (await receive_type(conn, "error"))["code"] == "no_such_poll"


def dark_modules_of_svg(body: bytes) -> set[tuple[int, int]]:
    """The dark modules drawn by a segno SVG: its path of horizontal strokes, read back."""
    root = ElementTree.fromstring(body)
    assert root.tag == f"{SVG}svg"
    strokes = [p for p in root.iter(f"{SVG}path") if p.get("stroke")]
    assert len(strokes) == 1
    dark: set[tuple[int, int]] = set()
    x = y = 0.0
    for command, a, b in re.findall(r"([MmHhVv])\s*(-?[\d.]+)(?:[ ,](-?[\d.]+))?",
                                    strokes[0].get("d")):
        if command == "M":
            x, y = float(a), float(b)
        elif command == "m":
            x, y = x + float(a), y + float(b)
        elif command == "h":
            dark.update((int(x) + n, int(y)) for n in range(int(float(a))))
            x += float(a)
        else:
            raise AssertionError(f"unexpected path command {command}")
    return dark


def dark_modules_of(url: str) -> set[tuple[int, int]]:
    """The dark modules of ``url``'s QR code as segno computes it, with a 4-module border."""
    rows = segno.make(url, error="m", micro=False).matrix_iter(border=4)
    return {(x, y) for y, row in enumerate(rows) for x, dark in enumerate(row) if dark}


async def test_qr_code_is_an_svg_of_the_polls_address(http_server_client):
    """GET /vote/<id>/qr.svg is a cacheable image/svg+xml whose modules encode the poll's
    absolute URL."""
    poll = await create(http_server_client)
    response = await http_server_client.fetch(f"/vote/{poll['id']}/qr.svg")
    assert response.headers["Content-Type"] == "image/svg+xml"
    assert "public" in response.headers["Cache-Control"]
    assert "max-age=" in response.headers["Cache-Control"]
    expected = http_server_client.get_url(f"/vote/{poll['id']}")
    assert dark_modules_of_svg(response.body) == dark_modules_of(expected)
    assert dark_modules_of_svg(response.body) != dark_modules_of(expected + "x")


async def test_qr_code_follows_the_proxy_scheme_and_host(config, start_server):
    """Behind a proxy (xheaders) the QR code's URL has the proxy's scheme and the Host."""
    from tornado.httpclient import AsyncHTTPClient

    app = make_app(Config(hub=config.hub, data_dir=config.data_dir))
    try:
        port = start_server(app, xheaders=True)
        response = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{port}/vote/demo/qr.svg",
            headers={"Host": "polls.example.org", "X-Forwarded-Proto": "https"},
        )
        assert dark_modules_of_svg(response.body) == dark_modules_of(
            "https://polls.example.org/vote/demo")
        bad = await AsyncHTTPClient().fetch(
            f"http://127.0.0.1:{port}/vote/demo/qr.svg",
            headers={"Host": "evil.example/<x>"}, raise_error=False,
        )
        assert bad.code == 400
    finally:
        app.settings["polls"].close()


@pytest.mark.parametrize("path, content_type", [
    ("/vote", "text/html"), ("/vote/demo", "text/html"), ("/vote/demo/present", "text/html"),
    ("/vote/demo/qr.svg", "image/svg+xml"), ("/api/polls", "application/json"),
    ("/api/polls/demo", "application/json"),
])
async def test_head_is_answered_like_get_without_a_body(http_server_client, path, content_type):
    """HEAD on every vote route answers 200 with GET's headers and no body."""
    get = await http_server_client.fetch(path)
    head = await http_server_client.fetch(path, method="HEAD")
    assert head.code == 200 and head.body == b""
    assert head.headers["Content-Type"].startswith(content_type)
    assert head.headers["Content-Type"] == get.headers["Content-Type"]


async def test_present_page_shows_the_question_and_the_qr_code(http_server_client):
    """/vote/<id>/present holds the question, the total and the QR code image."""
    poll = await create(http_server_client, title="Best <b>tea</b>?")
    page = (await http_server_client.fetch(f"/vote/{poll['id']}/present")).body.decode()
    assert "Best &lt;b&gt;tea&lt;/b&gt;?" in page
    assert f'src="/vote/{poll["id"]}/qr.svg"' in page
    assert 'id="present-total"' in page


async def test_owner_check_answers_whether_the_token_is_the_polls(http_server_client):
    """GET /api/polls/<id>/owner is 200 with the manage token, 403 not_owner with another,
    404 for an unknown poll: how a browser checks a manage link before keeping it."""
    poll = await create(http_server_client)
    ok = await manage(http_server_client, "GET", f"/api/polls/{poll['id']}/owner",
                      poll["manage_token"])
    assert ok.code == 200 and json.loads(ok.body) == {"owner": True}
    wrong = await manage(http_server_client, "GET", f"/api/polls/{poll['id']}/owner", "nope")
    assert wrong.code == 403 and error_of(wrong)["code"] == "not_owner"
    unknown = await manage(http_server_client, "GET", "/api/polls/nosuchpoll/owner", "x")
    assert unknown.code == 404 and error_of(unknown)["code"] == "no_such_poll"
