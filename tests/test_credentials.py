"""API credentials: from a systemd credential or a private file; never readable by others, never logged."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from s1mpled import credentials
from s1mpled.cli import main
from s1mpled.credentials import check_credentials, load_credentials
from s1mpled.errors import EX_CONFIG, ConfigError
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


# -------------------------------------------------- the path the admin edits; check-config in live mode


def test_missing_systemd_credential_names_the_file_the_admin_edits(tmp_path: Path) -> None:
    """Under systemd a missing key is reported as /etc/s1mpled/credentials/NAME, not systemd's /run copy."""
    env = {"CREDENTIALS_DIRECTORY": str(tmp_path / "run-credentials")}
    for name in ("binance.key", "s1mpled_binance.key"):
        with pytest.raises(ConfigError) as info:
            load_credentials(name, "cfg", env)
        assert info.value.file == "/etc/s1mpled/credentials/binance.key"
        assert "run-credentials" not in str(info.value)


def test_bad_systemd_copy_names_its_source(tmp_path: Path) -> None:
    """A garbled key file loaded by LoadCredential=s1mpled:DIR (copy s1mpled_F) is reported as DIR/F."""
    _write(tmp_path / "s1mpled_binance.key", "api_key: AK-check\n", 0o400)
    with pytest.raises(ConfigError) as info:
        load_credentials("binance.key", "cfg", {"CREDENTIALS_DIRECTORY": str(tmp_path)}, source_dir=Path("/etc/k"))
    assert (info.value.file, info.value.key) == ("/etc/k/binance.key", "secret")


def test_a_key_path_must_be_private_even_under_systemd(tmp_path: Path) -> None:
    """A path (not a systemd credential) is checked for privacy whether or not $CREDENTIALS_DIRECTORY is set."""
    path = _write(tmp_path / "k.yaml", "api_key: AK-check\nsecret: SK-check\n", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_credentials(str(path), "cfg", {"CREDENTIALS_DIRECTORY": str(tmp_path / "run")})


def test_check_credentials_outside_systemd_checks_the_source_file(tmp_path: Path) -> None:
    """check-config at a shell checks /etc/s1mpled/credentials/NAME itself: there, readable, private, complete."""
    source = tmp_path / "credentials"
    source.mkdir(mode=0o700)
    for name in ("binance.key", "s1mpled_binance.key"):
        with pytest.raises(ConfigError, match="cannot read credentials: No such file") as info:
            check_credentials(name, "cfg", {}, source_dir=source)
        assert info.value.file == str(source / "binance.key")
    _write(source / "binance.key", "api_key: AK-check\nsecret: SK-check\n", 0o644)
    with pytest.raises(ConfigError, match="mode 644 lets others read it; chmod 600") as info:
        check_credentials("binance.key", "cfg", {}, source_dir=source)
    assert info.value.file == str(source / "binance.key")
    os.chmod(source / "binance.key", 0o600)
    assert check_credentials("binance.key", "cfg", {}, source_dir=source) == source / "binance.key"
    assert check_credentials("s1mpled_binance.key", "cfg", {}, source_dir=source) == source / "binance.key"


LIVE = """\
operation: live-op
mode: live
live: {exchange: binance, credentials: CREDS}
strategies:
  - {name: dca-btc, class: "s1mpled.strategies.dca:DCA", symbol: BTC/USDT, capital: "1000",
     params: {quote_per_buy: "25", every_event: strategy_tick}}
"""


def _live_config(tmp_path: Path, credentials: str) -> Path:
    (tmp_path / "schedule.yaml").write_text(
        "events:\n  five_minute_reconciliation_tick: {every: 5m}\n  strategy_tick: {every: 5s}\n"
    )
    path = tmp_path / "s1mpled.yaml"
    path.write_text(LIVE.replace("CREDS", credentials))
    return path


@pytest.mark.parametrize(("mode", "why"), [(None, "No such file"), (0o644, "chmod 600"), (0o600, "")])
def test_check_config_in_live_mode_checks_a_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: int | None, why: str
) -> None:
    """Live check-config exits 78 naming the key file when it is missing or not private; 0 and says so when fine."""
    key = tmp_path / "binance.key"
    if mode is not None:
        _write(key, "api_key: AK-check\nsecret: SK-check\n", mode)
    code = main(["check-config", "--config", str(_live_config(tmp_path, str(key)))])
    out = capsys.readouterr()
    if why:
        assert code == EX_CONFIG and out.err.startswith(f"s1mpled: {key}: (file): ") and why in out.err, out.err
    else:
        assert code == 0 and f"credentials: {key}: OK" in out.out, out


def test_check_config_in_live_mode_checks_the_systemd_source_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a bare credential name and no systemd around, check-config names /etc/s1mpled/credentials/NAME."""
    source = tmp_path / "etc-credentials"
    source.mkdir(mode=0o700)
    monkeypatch.setattr(credentials, "CREDENTIALS_SOURCE_DIR", source)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    config = _live_config(tmp_path, "binance.key")
    assert main(["check-config", "--config", str(config)]) == EX_CONFIG
    assert capsys.readouterr().err.startswith(f"s1mpled: {source / 'binance.key'}: (file): cannot read credentials")
    _write(source / "binance.key", "api_key: AK-check\nsecret: SK-check\n")
    assert main(["check-config", "--config", str(config)]) == 0
    assert f"credentials: {source / 'binance.key'}: OK" in capsys.readouterr().out
