"""What the tests of the documentation share: the Markdown files, and the options and
endpoints they name, checked against what the server declares."""

import re
from pathlib import Path

import tornado.log
import tornado.options
import tornado.routing
import tornado.web

import server
from tests.conftest import ROOT

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# `--name`, not part of a longer word (`a--b`) nor the `--` that ends a command's options.
_FLAG = re.compile(r"(?<![\w-])--([a-z][a-z0-9-]*)")
# An inline code span holding one path, maybe after its HTTP method: `GET /healthz`.
_PATH = re.compile(r"`(?:(?:GET|POST|PUT|DELETE|HEAD) )?(/[^`\s]*)`")
# Paths of the machine, not of the server: the deployment's files and directories.
_FILESYSTEM = re.compile(r"^/(etc|opt|var|usr|proc|tmp|root|dev|run|lib|home|bin|sbin|srv)(/|$)")
# The flag declarations of the project's own commands (bench/, scripts/).
_DECLARED = re.compile(r"""add_argument\(\s*["']--([a-z][a-z0-9-]*)["']""")


def named_flags(text: str) -> set[str]:
    """The ``--flags`` a document names, without their dashes."""
    return set(_FLAG.findall(text))


def server_flags() -> set[str]:
    """Every flag ``tornado-realtime`` accepts: Config's options and their old names, and
    Tornado's own (``--help``, ``--logging``, ``--log-file-prefix``, ...)."""
    parser = tornado.options.OptionParser()
    tornado.log.define_logging_options(parser)
    server.define_options(server.Config, parser)
    return {name.replace("_", "-") for name in parser}


def command_flags() -> set[str]:
    """The flags the project's benchmarks and scripts declare (``argparse``)."""
    scripts = (path for path in (ROOT / "scripts").iterdir() if path.is_file())
    files = [*(ROOT / "bench").glob("*.py"), *scripts]
    return {flag for path in files for flag in _DECLARED.findall(path.read_text(encoding="utf-8"))}


def named_paths(text: str) -> set[str]:
    """The URL paths a document names in code spans (``/ws/chat/<room>?since=<id>``), each
    without its query or fragment; the machine's own paths (``/etc/...``) left out."""
    paths = {re.split(r"[?#]", path, maxsplit=1)[0] for path in _PATH.findall(text)}
    return {path for path in paths if not _FILESYSTEM.match(path)}


def route_patterns(router: tornado.routing.RuleRouter) -> list[re.Pattern[str]]:
    """The path patterns of every route under ``router``, routers within it included (the
    routes ``add_handlers`` adds sit under a host rule)."""
    patterns = []
    for rule in router.rules:
        if isinstance(rule.matcher, tornado.routing.PathMatches):
            patterns.append(rule.matcher.regex)
        if isinstance(rule.target, tornado.routing.RuleRouter):
            patterns.extend(route_patterns(rule.target))
    return patterns


def is_routed(app: tornado.web.Application, path: str) -> bool:
    """Whether ``path`` reaches one of ``app``'s routes, each ``<placeholder>`` taken as a
    plain name; a path ending in ``/`` (an nginx location) must begin some route."""
    patterns = route_patterns(app.default_router)
    if path.endswith("/") and path != "/":
        return any(pattern.pattern.startswith(path) for pattern in patterns)
    concrete = re.sub(r"<[^>]+>", "demo", path)
    return any(pattern.fullmatch(concrete) for pattern in patterns)


def unrouted(app: tornado.web.Application, document: Path, exempt: set[str]) -> set[str]:
    """The paths ``document`` names that no route of ``app`` serves, less ``exempt``."""
    return {path for path in named_paths(document.read_text(encoding="utf-8")) - exempt
            if not is_routed(app, path)}
