"""API credentials: from a systemd credential or a private file; never readable by others, never logged."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from s1mpled.credentials import load_credentials
from s1mpled.errors import ConfigError
from s1mpled.logs import clear_secrets, setup_logging


def _write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_systemd_credential_by_bare_name(tmp_path: Path) -> None:
    """A bare name is read from $CREDENTIALS_DIRECTORY (systemd's LoadCredential=)."""
    _write(tmp_path / "binance.key", "api_key: AK123\nsecret: SK456\n", 0o400)
    creds = load_credentials("binance.key", "cfg", {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert (creds.api_key, creds.secret) == ("AK123", "SK456")
    assert "SK456" not in repr(creds) and "AK123" not in repr(creds)


def test_bare_name_without_systemd_is_a_config_error(tmp_path: Path) -> None:
    """Naming a systemd credential outside systemd explains what is missing."""
    with pytest.raises(ConfigError, match="CREDENTIALS_DIRECTORY"):
        load_credentials("binance.key", "cfg", {})


def test_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    """A key file others can read is refused (chmod 600), like ssh does."""
    path = _write(tmp_path / "k.yaml", "api_key: a\nsecret: b\n", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_credentials(str(path), "cfg", {})


@pytest.mark.parametrize("text", ["", "api_key: a\n", "secret: b\n", "- a\n", "api_key: a\nsecret: b\nextra: c\n", ":"])
def test_incomplete_or_garbled_files_are_refused_without_echoing_values(tmp_path: Path, text: str) -> None:
    """Missing, extra or garbled keys are a ConfigError naming the file and key, never a value."""
    path = _write(tmp_path / "k.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_credentials(str(path), "cfg", {})
    assert str(path) in str(info.value)


def test_secret_never_reaches_the_log(tmp_path: Path) -> None:
    """Once loaded, the key and the secret are redacted from every log line, even in exception text."""
    stream = io.StringIO()
    setup_logging("info", stream=stream, journald=False)
    try:
        _write(tmp_path / "k.yaml", "api_key: VISIBLEKEY\nsecret: TOPSECRET\n")
        load_credentials(str(tmp_path / "k.yaml"), "cfg", {})
        log = logging.getLogger("s1mpled.test")
        log.error("auth failed for TOPSECRET with %s", "VISIBLEKEY")
        try:
            raise RuntimeError("signature TOPSECRET")
        except RuntimeError:
            log.exception("boom")
        out = stream.getvalue()
        assert "TOPSECRET" not in out and "VISIBLEKEY" not in out and "***" in out
    finally:
        clear_secrets()
        for h in list(logging.getLogger().handlers):
            logging.getLogger().removeHandler(h)
