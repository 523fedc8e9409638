"""The owner's tools: duplicate a poll and export its results as CSV, on SQLite and on
Redis."""

import csv
import io
import json

import pytest

from server import Config


@pytest.fixture
def config(polls_on) -> Config:
    """The test's application with its polls on SQLite, then on Redis (``polls_on``)."""
    return Config(**polls_on)


async def create(client, **fields) -> dict:
    """Create a poll through the API; its JSON with the manage token."""
    body = {"title": "Lunch?", "options": ["Pizza", "=SUM(A1)"], "one_vote_per_voter": False,
            **fields}
    response = await client.fetch(
        "/api/polls", method="POST", headers={"Content-Type": "application/json"},
        body=json.dumps(body))
    return json.loads(response.body)


async def vote(client, poll_id: str, option: str) -> None:
    response = await client.fetch(
        f"/api/polls/{poll_id}/vote", method="POST", body=json.dumps({"option": option}),
        headers={"Content-Type": "application/json"})
    assert response.code == 200


def bearer(poll: dict) -> dict:
    return {"Authorization": f"Bearer {poll['manage_token']}"}


async def test_duplicate_makes_a_fresh_poll_with_the_same_question_and_settings(
    http_server_client
):
    """Duplicating answers 201 with a new poll: the same title, options and settings, no
    votes, its own id, code and manage token."""
    poll = await create(http_server_client, results="hidden", listed=True)
    await vote(http_server_client, poll["id"], "1")
    response = await http_server_client.fetch(
        f"/api/polls/{poll['id']}/duplicate", method="POST", body="", headers=bearer(poll))
    assert response.code == 201
    copy = json.loads(response.body)
    assert copy["id"] != poll["id"] and copy["code"] != poll["code"]
    assert copy["manage_token"] != poll["manage_token"]
    same = ("title", "one_vote_per_voter", "listed", "results")
    assert {k: copy[k] for k in same} == {k: poll[k] for k in same}
    assert [o["label"] for o in copy["options"]] == ["Pizza", "=SUM(A1)"]
    assert copy["total"] == 0 and response.headers["Location"] == f"/api/polls/{copy['id']}"


async def test_only_the_owner_duplicates_or_exports(http_server_client):
    """Without the manage token duplicating and the CSV export are 403 not_owner."""
    poll = await create(http_server_client)
    for method, path in (("POST", "duplicate"), ("GET", "results.csv")):
        response = await http_server_client.fetch(
            f"/api/polls/{poll['id']}/{path}", method=method,
            body="" if method == "POST" else None, raise_error=False,
            headers={"Authorization": "Bearer wrong"})
        assert response.code == 403
        assert json.loads(response.body)["error"]["code"] == "not_owner"


async def test_results_csv_has_a_row_per_option_and_defuses_formulas(http_server_client):
    """The CSV export is an attachment with a header, one row per option with votes and
    percent, and the total; a label starting with = is prefixed with '."""
    poll = await create(http_server_client, results="hidden")
    for option in ("1", "1", "2"):
        await vote(http_server_client, poll["id"], option)
    response = await http_server_client.fetch(
        f"/api/polls/{poll['id']}/results.csv", headers=bearer(poll))
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(response.body.decode())))
    assert rows == [
        ["option", "label", "votes", "percent"],
        ["1", "Pizza", "2", "66.7"],
        ["2", "'=SUM(A1)", "1", "33.3"],
        ["", "total", "3", "100"],
    ]
