"""The poll HTTP API: create, list, get, and every way a request can be refused."""

import json

import pytest

from server import Config

GOOD = {"title": "Lunch?", "options": ["Pizza", "Soup"]}
BURST = 3


@pytest.fixture
def config(polls_on) -> Config:
    """The test's application with its polls on SQLite, then on Redis (``polls_on``), and a
    small creation burst."""
    return Config(**polls_on, poll_burst=BURST, polls_per_hour=1)


async def post(client, body, content_type="application/json", **kwargs):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return await client.fetch(
        "/api/polls", method="POST", body=data, headers={"Content-Type": content_type},
        raise_error=False, **kwargs,
    )


def error_code(response) -> str:
    assert response.headers["Content-Type"].startswith("application/json")
    return json.loads(response.body)["error"]["code"]


async def test_create_answers_201_with_the_poll(http_server_client):
    """A good body makes a poll: 201, its JSON, and a Location to read it back."""
    response = await post(http_server_client, {**GOOD, "one_vote_per_voter": True})
    assert response.code == 201
    poll = json.loads(response.body)
    assert poll == {
        "id": poll["id"], "title": "Lunch?", "one_vote_per_voter": True,
        "listed": False, "closed": False, "code": poll["code"], "results": "live",
        "revealed": False, "allow_change": False, "max_choices": 1,
        "options": [{"id": "1", "label": "Pizza", "gloss": None, "votes": 0},
                    {"id": "2", "label": "Soup", "gloss": None, "votes": 0}],
        "total": 0, "manage_token": poll["manage_token"],
    }
    assert len(poll["manage_token"]) >= 32
    assert response.headers["Location"] == f"/api/polls/{poll['id']}"


async def test_get_answers_the_poll(http_server_client):
    """GET /api/polls/<id> answers the poll as it was created."""
    created = json.loads((await post(http_server_client, GOOD)).body)
    del created["manage_token"]  # answered once, at creation
    response = await http_server_client.fetch(f"/api/polls/{created['id']}")
    assert json.loads(response.body) == created
    assert response.headers["Cache-Control"] == "no-store"


async def test_list_holds_new_polls_and_the_demo(http_server_client):
    """GET /api/polls lists a new listed poll first and the demo poll."""
    created = json.loads((await post(http_server_client, {**GOOD, "listed": True})).body)
    polls = json.loads((await http_server_client.fetch("/api/polls")).body)["polls"]
    assert [p["id"] for p in polls] == [created["id"], "demo"]


async def test_demo_poll_exists_on_a_fresh_start(http_server_client):
    """The demo poll has the three original candidates and counts every click."""
    demo = json.loads((await http_server_client.fetch("/api/polls/demo")).body)
    assert [o["label"] for o in demo["options"]] == ["钢弹", "铁锤", "贝贝"]
    assert demo["one_vote_per_voter"] is False and demo["total"] == 0


@pytest.mark.parametrize("path", ["/api/polls/nope", "/api/polls/" + "x" * 200])
async def test_unknown_poll_is_a_json_404(http_server_client, path):
    """An unknown id answers 404 with the no_such_poll error."""
    response = await http_server_client.fetch(path, raise_error=False)
    assert response.code == 404 and error_code(response) == "no_such_poll"


@pytest.mark.parametrize("body, code", [
    ("{not json", "bad_json"),
    (b"\xff\xfe{", "bad_json"),
    ("[" * 10_000 + "]" * 10_000, "bad_json"),
    ("", "bad_json"),
    ([], "bad_request"),
    ({"options": ["a", "b"]}, "bad_title"),
    ({**GOOD, "title": ""}, "bad_title"),
    ({**GOOD, "title": "x" * 201}, "bad_title"),
    ({**GOOD, "options": ["a"]}, "bad_options"),
    ({**GOOD, "options": [str(n) for n in range(21)]}, "bad_options"),
    ({**GOOD, "options": ["a", ""]}, "bad_options"),
    ({**GOOD, "options": ["a", "a"]}, "bad_options"),
    ({**GOOD, "options": ["a", "x" * 101]}, "bad_options"),
    ({**GOOD, "options": "a,b"}, "bad_options"),
    ({**GOOD, "one_vote_per_voter": "yes"}, "bad_one_vote_per_voter"),
])
async def test_bad_body_is_a_400_naming_the_field(http_server_client, body, code):
    """Each kind of bad body answers 400 with its own error code and a message."""
    response = await post(http_server_client, body)
    assert response.code == 400
    assert error_code(response) == code
    assert json.loads(response.body)["error"]["message"]


async def test_lone_surrogate_in_json_is_refused_not_a_crash(http_server_client):
    """A title JSON-escaped as a lone surrogate is bad_title, not a 500."""
    response = await post(http_server_client, '{"title": "\\ud800", "options": ["a", "b"]}')
    assert response.code == 400 and error_code(response) == "bad_title"


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "",
])
async def test_post_that_is_not_json_is_a_415(http_server_client, content_type):
    """A POST a cross-site form could send is refused with 415."""
    response = await post(http_server_client, GOOD, content_type=content_type)
    assert response.code == 415 and error_code(response) == "unsupported_media_type"


async def test_json_content_type_with_charset_is_accepted(http_server_client):
    """application/json; charset=utf-8 is JSON too."""
    response = await post(http_server_client, GOOD, content_type="application/json; charset=utf-8")
    assert response.code == 201


async def test_oversized_body_is_a_413(http_server_client):
    """A body past the size limit is refused before it is parsed."""
    response = await post(http_server_client, {**GOOD, "padding": "x" * 100_000})
    assert response.code == 413 and error_code(response) == "too_large"


async def test_creation_past_the_limit_is_a_429_with_retry_after(http_server_client):
    """Past the burst, one IP's next poll answers 429 with a Retry-After in seconds."""
    for _ in range(BURST):
        assert (await post(http_server_client, GOOD)).code == 201
    response = await post(http_server_client, GOOD)
    assert response.code == 429 and error_code(response) == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1


async def test_refused_bodies_do_not_use_up_the_limit(http_server_client):
    """Bad requests do not count against the creation limit."""
    for _ in range(BURST + 2):
        assert (await post(http_server_client, {"title": ""})).code == 400
    assert (await post(http_server_client, GOOD)).code == 201


async def test_poll_created_without_the_field_takes_one_vote_per_voter(http_server_client):
    """A poll created with only a title and options answers one_vote_per_voter: true."""
    response = await post(http_server_client, GOOD)
    assert json.loads(response.body)["one_vote_per_voter"] is True


async def test_every_problem_of_a_body_is_answered_at_once(http_server_client):
    """A body with several bad fields answers all of them in "errors", each with its field;
    the error itself is the first."""
    response = await post(http_server_client, {"title": " ", "options": ["Tea", "tea\u200b"]})
    error = json.loads(response.body)["error"]
    assert response.code == 400
    assert [(e["code"], e["field"]) for e in error["errors"]] == [
        ("bad_title", "title"), ("bad_options", "options.1")]
    assert (error["code"], error["field"]) == ("bad_title", "title")
    assert all(e["message"] for e in error["errors"])
