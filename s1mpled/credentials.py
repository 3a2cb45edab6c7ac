"""Exchange API credentials: read from a file or a systemd credential, never from the config, never logged.

Under systemd the unit's ``LoadCredential=`` places the file in ``$CREDENTIALS_DIRECTORY`` (readable only
by the service); the config then names it by its bare file name. Outside systemd the config may give a
path, and the file must not be readable by group or others (like ssh's private keys). The file is YAML::

    api_key: "..."
    secret: "..."

Both values are registered with the log redaction filter before anything else happens, so neither can
reach the journal even inside an exception message.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from s1mpled.errors import ConfigError
from s1mpled.logs import register_secret

__all__ = ["Credentials", "load_credentials", "resolve_credentials_path"]


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


def load_credentials(name: str, config_file: str, env: Mapping[str, str] | None = None) -> Credentials:
    """Read and validate the credential file; errors name the file and the key, never a value."""
    env = os.environ if env is None else env
    path = resolve_credentials_path(name, env, config_file)
    where = str(path)
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(where, "(file)", f"cannot read credentials: {exc.strerror}") from None
    if not env.get("CREDENTIALS_DIRECTORY") and st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
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
    unknown = sorted(set(doc) - {"api_key", "secret"})
    if unknown:
        raise ConfigError(where, unknown[0], "unknown key (expected api_key and secret)")
    return Credentials(values["api_key"], values["secret"])
