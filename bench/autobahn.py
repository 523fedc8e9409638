"""Autobahn|Testsuite's fuzzing client against ``/ws/echo``, in one command.

    python bench/autobahn.py                  # every case, the default options (~5 min)
    python bench/autobahn.py --compression    # with --compression: the 12.x/13.x cases too
    python bench/autobahn.py --cases '7.*'    # the close-frame cases only
    python bench/autobahn.py --summarize reports/autobahn   # count an earlier run again

Needs Docker: the suite (``wstest``) is Python 2 only and is run from the
``crossbario/autobahn-testsuite`` image, with host networking so it reaches the server on
127.0.0.1. Starts this checkout's ``server.py`` on a free loopback port with every limit off
and room for the suite's 16 MB messages (``bench/servers.real_server``), runs the cases,
stops the server by its pid and prints how many cases ended in each behaviour (OK,
NON-STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED) and which failed. The HTML report is in
``--reports`` (``servers/index.html``). Exit status 1 if a case FAILED.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from typing import Any

from servers import ROOT, real_server

IMAGE = "crossbario/autobahn-testsuite"
AGENT = "tornado-realtime"
RUN_TIMEOUT = 3600  # seconds the whole suite may take before it is stopped
MESSAGE_BYTES = 64 * 1024 * 1024  # the suite's largest message (9.x) is 16 MB
BEHAVIOURS = ("OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compression", action="store_true",
                        help="run the server with --compression (permessage-deflate)")
    parser.add_argument("--cases", default="*", help="comma-separated case patterns")
    parser.add_argument("--exclude", default="", help="comma-separated case patterns to skip")
    parser.add_argument("--reports", default=os.path.join(ROOT, "reports", "autobahn"),
                        help="where the suite writes its reports (default reports/autobahn)")
    parser.add_argument("--image", default=IMAGE, help=f"the suite's image (default {IMAGE})")
    parser.add_argument("--summarize", metavar="REPORTS",
                        help="only count the results of an earlier run in REPORTS")
    return parser.parse_args()


def split(patterns: str) -> list[str]:
    return [pattern for pattern in patterns.split(",") if pattern]


def run_suite(args: argparse.Namespace) -> None:
    """Start the server, run the fuzzing client in Docker against it, stop the server."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "info"], capture_output=True).returncode:
        sys.exit("bench/autobahn.py: needs a running Docker (the suite is Python 2 only, "
                 f"run from the {IMAGE} image); none here")
    reports = os.path.abspath(args.reports)
    os.makedirs(reports, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="autobahn-") as tmp:
        server, _, _ = real_server(tmp, compression=args.compression,
                                   max_message_size=MESSAGE_BYTES,
                                   max_pending_bytes=MESSAGE_BYTES)
        config = {
            "outdir": "/reports/servers",
            "servers": [{"agent": AGENT, "url": f"ws://127.0.0.1:{server.port}/ws/echo"}],
            "cases": split(args.cases),
            "exclude-cases": split(args.exclude),
            "exclude-agent-cases": {},
        }
        with open(os.path.join(tmp, "fuzzingclient.json"), "w", encoding="utf-8") as file:
            json.dump(config, file)
        server.start(cores=None)
        try:
            subprocess.run(
                [docker, "run", "--rm", "--network", "host", "-v", f"{tmp}:/config",
                 "-v", f"{reports}:/reports", args.image, "wstest", "-m", "fuzzingclient",
                 "-s", "/config/fuzzingclient.json"],
                check=True, timeout=RUN_TIMEOUT)
        finally:
            server.stop()
            errors = server.error_lines()
            if errors:
                print(f"the server logged {len(errors)} error line(s):", *errors[:10],
                      sep="\n  ")


def summarize(reports: str) -> int:
    """Print the count of each behaviour and the failed cases; 1 if any failed, else 0."""
    with open(os.path.join(reports, "servers", "index.json"), encoding="utf-8") as file:
        index: dict[str, dict[str, dict[str, Any]]] = json.load(file)
    status = 0
    for agent, cases in index.items():
        counts = Counter(case["behavior"] for case in cases.values())
        print(f"{agent}: {len(cases)} cases: " + ", ".join(
            f"{counts.get(name, 0)} {name}" for name in BEHAVIOURS))
        failed = sorted((name for name, case in cases.items() if case["behavior"] == "FAILED"),
                        key=lambda name: [int(part) for part in name.split(".")])
        if failed:
            print("  FAILED: " + " ".join(failed))
            status = 1
    return status


def main() -> int:
    args = parse_args()
    if args.summarize:
        return summarize(args.summarize)
    run_suite(args)
    return summarize(args.reports)


if __name__ == "__main__":
    sys.exit(main())
