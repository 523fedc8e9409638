"""The vote pages: HTML, the voter cookie, the 404 page, escaping."""

import json
import re

import pytest

VOTE_PAGES = ["/vote", "/vote/demo"]


@pytest.mark.parametrize("path", VOTE_PAGES)
async def test_vote_page_is_served_as_html(http_server_client, path):
    """/vote and /vote/<id> answer 200 with HTML."""
    response = await http_server_client.fetch(path)
    assert response.code == 200
    assert response.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("path", VOTE_PAGES)
async def test_vote_page_issues_an_httponly_samesite_voter_cookie(http_server_client, path):
    """A browser without a voter cookie gets a signed, HttpOnly, SameSite=Lax one."""
    response = await http_server_client.fetch(path)
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("voter=2|")  # Tornado's signed-value format, version 2
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "expires=" in cookie


async def test_valid_voter_cookie_is_kept(http_server_client):
    """A browser that has a valid voter cookie is not given a new one."""
    first = await http_server_client.fetch("/vote")
    cookie = first.headers["Set-Cookie"].split(";")[0]
    again = await http_server_client.fetch("/vote/demo", headers={"Cookie": cookie})
    assert "Set-Cookie" not in again.headers


async def test_forged_voter_cookie_is_replaced(http_server_client):
    """An unsigned voter cookie is replaced by a signed one."""
    response = await http_server_client.fetch("/vote", headers={"Cookie": "voter=alice"})
    assert response.headers["Set-Cookie"].startswith("voter=2|")


async def test_unknown_poll_page_is_a_404_page(http_server_client):
    """/vote/<unknown id> answers 404 with the HTML error page and no cookie."""
    response = await http_server_client.fetch("/vote/nope", raise_error=False)
    assert response.code == 404
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Set-Cookie" not in response.headers


async def test_poll_titles_are_escaped(http_server_client):
    """A title full of markup reaches the pages as text, never as HTML."""
    body = json.dumps(
        {"title": "<script>alert(1)</script>", "options": ["<b>a</b>", "b"], "listed": True}
    )
    created = await http_server_client.fetch(
        "/api/polls", method="POST", body=body, headers={"Content-Type": "application/json"}
    )
    poll_id = json.loads(created.body)["id"]
    for path in ["/vote", f"/vote/{poll_id}"]:
        page = (await http_server_client.fetch(path)).body.decode()
        assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_poll_list_links_each_poll(http_server_client):
    """/vote lists the demo poll with a link to its page."""
    page = (await http_server_client.fetch("/vote")).body.decode()
    assert 'href="/vote/demo"' in page


async def test_index_and_nav_link_to_voting(http_server_client):
    """The index page has a card and the nav a link for /vote."""
    page = (await http_server_client.fetch("/")).body.decode()
    assert page.count('href="/vote"') == 2


@pytest.mark.parametrize("path", VOTE_PAGES)
async def test_vote_pages_use_only_served_assets_and_no_inline_script(http_server_client, path):
    """Every script and stylesheet of a vote page is served, and none is inline."""
    page = (await http_server_client.fetch(path)).body.decode()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []
    assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page)
    assert any("/js/" in asset for asset in assets)
    for asset in assets:
        assert (await http_server_client.fetch(asset)).code == 200, asset
