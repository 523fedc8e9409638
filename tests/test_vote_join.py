"""Poll ids and join codes: no look-alike characters, and /j/<code> and /vote?code= lead
to the poll."""

import json
import re

import pytest

from realtime.votes.ids import CODE_ALPHABET, ID_ALPHABET, normalize_code

LOOK_ALIKES = set("0Oo1lIiUuVv-_")


async def create(client) -> dict:
    """Create a poll through the API; its JSON."""
    response = await client.fetch(
        "/api/polls", method="POST", headers={"Content-Type": "application/json"},
        body=json.dumps({"title": "Lunch?", "options": ["Tea", "Coffee"]}),
    )
    return json.loads(response.body)


async def test_new_poll_ids_and_codes_avoid_look_alike_characters(http_server_client):
    """A new poll's id is 10 characters and its join code 6, none of them a look-alike
    (0/O, 1/l/I, u/v, - and _)."""
    for _ in range(5):
        poll = await create(http_server_client)
        assert re.fullmatch(f"[{ID_ALPHABET}]{{10}}", poll["id"])
        assert re.fullmatch(f"[{CODE_ALPHABET}]{{6}}", poll["code"])
        assert not LOOK_ALIKES & set(poll["id"] + poll["code"])


@pytest.mark.parametrize("path", ["/j/{code}", "/j/{lower}", "/vote?code={code}",
                                  "/vote?code={spaced}"])
async def test_a_join_code_redirects_to_its_poll(http_server_client, path):
    """/j/<code> and /vote?code=<code> redirect to the poll, whatever the case, with spaces
    or dashes in the code."""
    poll = await create(http_server_client)
    code = poll["code"]
    url = path.format(code=code, lower=code.lower(), spaced=f"{code[:3]}-{code[3:]}")
    response = await http_server_client.fetch(url, follow_redirects=False, raise_error=False)
    assert response.code == 302
    assert response.headers["Location"] == f"/vote/{poll['id']}"


@pytest.mark.parametrize("path", ["/j/ZZZZZZ", "/vote?code=ZZZZZZ", "/j/not-a-code",
                                  "/vote?code="])
async def test_an_unknown_join_code_is_a_404_that_says_so(http_server_client, path):
    """A code no poll has answers the /vote page with a 404 and a sentence beside the code
    box."""
    response = await http_server_client.fetch(path, raise_error=False)
    assert response.code == 404
    page = response.body.decode()
    assert 'id="join-code-error"' in page and "No poll has the code" in page


async def test_the_join_code_is_shown_on_the_present_view(http_server_client):
    """The present view carries the poll's join code."""
    poll = await create(http_server_client)
    page = (await http_server_client.fetch(f"/vote/{poll['id']}/present")).body.decode()
    assert f'<strong id="present-code">{poll["code"]}</strong>' in page


def test_typed_codes_are_forgiven_case_spaces_and_dashes():
    """What people type is upper-cased and stripped of spaces and dashes; anything that
    cannot be a code is None."""
    assert normalize_code(" hk7-m3q ") == "HK7M3Q"
    assert normalize_code("HK7 M3Q") == "HK7M3Q"
    assert normalize_code("HK7M3") is None and normalize_code("HK7M30") is None
