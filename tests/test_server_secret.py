"""The cookie secret kept in the data directory."""

import os
import stat

import pytest

from server import load_cookie_secret


def test_secret_is_generated_once_and_kept(tmp_path):
    """The first call writes a long secret readable by the owner only; later calls reread it."""
    path = str(tmp_path / "cookie_secret")
    secret = load_cookie_secret(path)
    assert len(secret) >= 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_cookie_secret(path) == secret


def test_short_secret_is_refused(tmp_path):
    """A secret file with fewer than 32 characters stops the server from starting."""
    path = tmp_path / "cookie_secret"
    path.write_text("too short\n")
    with pytest.raises(ValueError):
        load_cookie_secret(str(path))
