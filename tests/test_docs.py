"""The README and docs/ name only options and endpoints the server has: a renamed or removed
option or route fails here until the documents follow."""

from pathlib import Path

import pytest
import tornado.web

from realtime.chat.lines import COMMANDS
from tests.docs import (
    DOCUMENTS, command_flags, named_flags, named_paths, server_flags, unrouted,
)

# Flags of other programs the documents show, each with the program it belongs to.
OTHER_PROGRAMS = {
    "system": "adduser", "home": "adduser", "shell": "adduser",
    "now": "systemctl enable --now",
    "cluster": "redis-cli --cluster create", "cluster-replicas": "redis-cli --cluster create",
    "log-cli-level": "pytest",
}
# Flags that stand for no option on purpose: the pattern of every option's name, and the
# misspelt option of the example error message (`unknown option --prot; did you mean --port?`).
ILLUSTRATIONS = {"some-option", "prot"}
# Lines of the raw TCP chat (`/nick alice`), not URLs: its commands, and the examples of
# what is no command (`/word`) and of escaping a leading slash (`//text` sends `/text`).
TCP_LINES = {f"/{name}" for name in COMMANDS} | {"/word", "/text", "//text"}
# docs/extending.md names the endpoints its own route line adds; its test runs them.
GUIDE = Path(__file__).resolve().parent.parent / "docs" / "extending.md"


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_flag_a_document_names_exists(document):
    """Each `--flag` a document names is an option of the server, a flag a benchmark or
    script of the project declares, or another program's flag listed above."""
    known = server_flags() | command_flags() | set(OTHER_PROGRAMS) | ILLUSTRATIONS
    assert named_flags(document.read_text(encoding="utf-8")) - known == set()


def test_flags_of_other_programs_are_not_server_options():
    """The flags excused as other programs' are none of the server's, so a server option
    cannot hide among them."""
    assert (set(OTHER_PROGRAMS) | ILLUSTRATIONS) & server_flags() == set()


@pytest.mark.parametrize("document", [path for path in DOCUMENTS if path != GUIDE],
                         ids=lambda path: path.name)
def test_every_endpoint_a_document_names_is_routed(document, app: tornado.web.Application):
    """Each URL path a document names in code (`/ws/chat/<room>`, `GET /healthz`) is served
    by a route of the application make_app builds."""
    assert unrouted(app, document, TCP_LINES) == set()


def test_the_documents_name_endpoints():
    """The check above has paths to check: the protocol names the chat socket and /healthz."""
    paths = named_paths((GUIDE.parent / "protocol.md").read_text(encoding="utf-8"))
    assert {"/ws/chat/<room>", "/healthz"} <= paths
