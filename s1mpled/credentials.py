"""Exchange API credentials: read from a file or a systemd credential, never from the config, never logged.

Under systemd the unit's ``LoadCredential=`` places the file in ``$CREDENTIALS_DIRECTORY`` (readable only
by the service); the config then names it by its bare file name. Outside systemd the config may give a
path, and the file must not be readable by group or others (like ssh's private keys). The file is YAML::

    api_key: "..."
    secret: "..."

Both values are registered with the log redaction filter before anything else happens, so neither can
reach the journal even inside an exception message.

Errors name the file the administrator edits, not systemd's private copy: the packaged units load the
whole ``/etc/s1mpled/credentials`` directory (``LoadCredential=s1mpled:/etc/s1mpled/credentials``), which
systemd exposes as ``$CREDENTIALS_DIRECTORY/s1mpled_<file>``, so a bare name ``binance.key`` (or
``s1mpled_binance.key``) is ``/etc/s1mpled/credentials/binance.key`` to the admin. ``check_credentials``
is what ``s1mpled check-config`` runs in live mode: outside systemd it checks that very file (exists, is
readable, is private, holds a key pair), so a missing key is found before ``systemctl start``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from s1mpled.errors import ConfigError
from s1mpled.logs import register_secret

__all__ = [
    "CREDENTIALS_SOURCE_DIR",
    "Credentials",
    "check_credentials",
    "credentials_source",
    "load_credentials",
    "resolve_credentials_path",
]

CREDENTIALS_SOURCE_DIR = Path("/etc/s1mpled/credentials")  # what the packaged units' LoadCredential= loads
_PACKAGED = "s1mpled_"  # LoadCredential=s1mpled:DIR exposes DIR/F as s1mpled_F


@dataclass(frozen=True, slots=True)
class Credentials:
    """An API key pair; ``repr`` never shows the values."""

    api_key: str = field(repr=False)
    secret: str = field(repr=False)


def resolve_credentials_path(name: str, env: Mapping[str, str], config_file: str) -> Path:
    """A bare name is looked up in $CREDENTIALS_DIRECTORY; anything with a '/' is a path."""
    if "/" in name:
        return Path(name)
    directory = env.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise ConfigError(
            config_file,
            "live.credentials",
            f"{name!r} is a systemd credential name, but $CREDENTIALS_DIRECTORY is not set "
            "(run under the s1mpled unit with LoadCredential=, or give a path)",
        )
    plain, packaged = Path(directory) / name, Path(directory) / f"s1mpled_{name}"
    # The packaged units load the whole /etc/s1mpled/credentials folder (LoadCredential=s1mpled:DIR),
    # which systemd exposes as s1mpled_<file>; a unit with its own LoadCredential=NAME:PATH gives NAME.
    return packaged if not plain.exists() and packaged.exists() else plain


def credentials_source(name: str, source_dir: Path | None = None) -> Path:
    """The file an administrator edits for the bare credential name ``name`` (or systemd's copy of it).

    ``binance.key`` and ``s1mpled_binance.key`` (what systemd calls the directory's ``binance.key``) both
    mean ``/etc/s1mpled/credentials/binance.key``; an unprefixed name the packaged units do not produce
    (a drop-in's own ``LoadCredential=NAME:PATH``) is shown as ``/etc/s1mpled/credentials/NAME``.
    """
    source_dir = CREDENTIALS_SOURCE_DIR if source_dir is None else source_dir
    base = Path(name).name
    if base.startswith(_PACKAGED) and len(base) > len(_PACKAGED):
        base = base[len(_PACKAGED) :]
    return source_dir / base


def _read(path: Path, shown: Path, *, private: bool, hint: str = "") -> Credentials:
    """Read and validate the file at ``path``; errors name ``shown`` and the key, never a value."""
    where = str(shown)
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        extra = f" ({hint})" if hint and exc.errno == errno.EACCES else ""
        raise ConfigError(where, "(file)", f"cannot read credentials: {exc.strerror}{extra}") from None
    except UnicodeDecodeError:
        raise ConfigError(where, "(file)", "not UTF-8 text (expected api_key: and secret:)") from None
    if private and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(where, "(file)", f"mode {stat.S_IMODE(st.st_mode):o} lets others read it; chmod 600")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(where, "(file)", "not valid YAML (expected api_key: and secret:)") from None
    if not isinstance(doc, dict):
        raise ConfigError(where, "(file)", "expected a mapping with api_key and secret")
    values = {}
    for key in ("api_key", "secret"):
        value = doc.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(where, key, "missing or empty")
        values[key] = value.strip()
        register_secret(values[key])
    unknown = sorted(str(k) for k in set(doc) - {"api_key", "secret"})
    if unknown:
        raise ConfigError(where, unknown[0], "unknown key (expected api_key and secret)")
    return Credentials(values["api_key"], values["secret"])


def load_credentials(
    name: str,
    config_file: str,
    env: Mapping[str, str] | None = None,
    *,
    source_dir: Path | None = None,
) -> Credentials:
    """Read and validate the credential file; errors name the file (as the admin knows it) and the key.

    A path must be private (no group or other access); systemd's copy in ``$CREDENTIALS_DIRECTORY`` is
    private by construction, and an error about it names ``/etc/s1mpled/credentials/<file>``.
    """
    env = os.environ if env is None else env
    path = resolve_credentials_path(name, env, config_file)
    if "/" in name:
        return _read(path, path, private=True)
    return _read(path, credentials_source(path.name, source_dir), private=False)


def check_credentials(
    name: str,
    config_file: str,
    env: Mapping[str, str] | None = None,
    *,
    source_dir: Path | None = None,
) -> Path:
    """What ``check-config`` verifies in live mode: the key file ``run`` will read exists, is readable and
    private, and holds a key pair. Returns the path checked (the one the admin edits); ConfigError if not.

    Under systemd (``$CREDENTIALS_DIRECTORY`` set) that is what ``run`` reads. Outside it -- an admin at a
    shell -- a bare name is checked at its source, ``/etc/s1mpled/credentials/<file>``, with the rules of
    a path (private), since systemd copies that file for the daemon.
    """
    env = os.environ if env is None else env
    source_dir = CREDENTIALS_SOURCE_DIR if source_dir is None else source_dir
    if "/" in name or env.get("CREDENTIALS_DIRECTORY"):
        load_credentials(name, config_file, env, source_dir=source_dir)
        return Path(name) if "/" in name else credentials_source(name, source_dir)
    # systemd's copy of DIR/F is s1mpled_F: the name means DIR/<name without s1mpled_>, else DIR/<name>
    candidates = list(dict.fromkeys([credentials_source(name, source_dir), source_dir / name]))
    source = next((c for c in candidates if os.path.lexists(c)), candidates[0])
    _read(source, source, private=True, hint=f"{source_dir} is root-only: run check-config as root")
    return source
