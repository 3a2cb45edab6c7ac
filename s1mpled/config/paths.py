"""Where things are: the configuration file, the state directory, the control socket.

Defaults follow systemd's conventions: ``$STATE_DIRECTORY`` and ``$RUNTIME_DIRECTORY`` when the unit sets
them, XDG directories otherwise; relative paths in a file are relative to that file's directory.

The control commands (``status``, ``reconcile``, ``halt``, ``resume``, ``status --all``) need only the
socket, and :func:`resolve_control_socket` reads only what locating it takes -- ``control_socket``, else
``state_dir`` -- with the same rules as the full load. An operator must be able to ``s1mpled halt`` a
daemon whose configuration an edit has just broken, so a strategy's params, the credentials or any other
part of the file are never read, let alone validated, on that path (nor is a strategy or ccxt imported).
What it does read is refused like everywhere else: ``file:line: key: why``, exit 78.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from s1mpled.config.nodes import Doc, YamlMap, compose, read_file, read_path
from s1mpled.errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "UNIX_SOCKET_MAX",
    "control_socket_of",
    "first_env_path",
    "resolve_config_path",
    "resolve_control_socket",
    "state_dir_of",
]

DEFAULT_CONFIG_PATH = Path("/etc/s1mpled/s1mpled.yaml")
CONFIG_ENV = "S1MPLED_CONFIG"
UNIX_SOCKET_MAX = 107  # sun_path is 108 bytes including the terminating NUL
_SOCKET_KEYS = ("control_socket", "state_dir")  # all that locating the socket may read


def resolve_config_path(cli_path: str | None, env: Mapping[str, str]) -> Path:
    """``--config``, else ``$S1MPLED_CONFIG``, else /etc/s1mpled/s1mpled.yaml; the file must be readable."""
    path = Path(cli_path or env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    if not path.is_file():
        why = "is a directory" if path.is_dir() else "no such file"
        raise ConfigError(str(path), "(file)", f"cannot read the configuration: {why}")
    if not os.access(path, os.R_OK):
        raise ConfigError(str(path), "(file)", "cannot read the configuration: permission denied")
    return path


def resolve_control_socket(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Path:
    """The daemon's control socket as the configuration at ``path`` places it, reading nothing else of it.

    Agrees with ``load_config(path, env).control_socket`` whenever that loads; refuses (ConfigError) only
    what locating the socket needs: a file that is not YAML, a top level that is not a mapping, a bad or
    duplicated ``control_socket`` (or ``state_dir`` when the socket's default depends on it).
    """
    env = os.environ if env is None else env
    path = resolve_config_path(None, env) if path is None else Path(path)
    doc = Doc(str(path), path.absolute().parent)
    root = YamlMap.picking(doc, compose(doc, read_file(doc.file)), _SOCKET_KEYS)
    return control_socket_of(doc, root, env, lambda: state_dir_of(doc, root, env))


def first_env_path(env: Mapping[str, str], name: str) -> Path | None:
    """systemd's ``$STATE_DIRECTORY``-style variables: ':'-separated, the first one is ours."""
    first = env.get(name, "").split(":")[0]
    return Path(first) if first else None


def state_dir_of(doc: Doc, root: YamlMap, env: Mapping[str, str]) -> Path:
    """``state_dir``, else systemd's ``$STATE_DIRECTORY``, else ``$XDG_STATE_HOME/s1mpled``, else
    ``~/.local/state/s1mpled``."""
    node = root.get("state_dir")
    if node is not None:
        return read_path(doc, node, "state_dir")
    systemd = first_env_path(env, "STATE_DIRECTORY")
    if systemd is not None:
        return systemd
    xdg = env.get("XDG_STATE_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec: relative values are ignored
        return Path(xdg) / "s1mpled"
    try:
        home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    except RuntimeError:  # no $HOME and no home directory in the user database
        raise doc.error("state_dir", "no default without a home directory ($HOME unset): set state_dir", None) from None
    return home / ".local" / "state" / "s1mpled"


def control_socket_of(doc: Doc, root: YamlMap, env: Mapping[str, str], state_dir: Callable[[], Path]) -> Path:
    """``control_socket``, else ``$RUNTIME_DIRECTORY/control.sock``, else ``<state_dir>/control.sock``.

    ``state_dir`` is asked for only in the last case, so a socket placed explicitly does not depend on it.
    """
    node = root.get("control_socket")
    if node is not None:
        path = read_path(doc, node, "control_socket")
    else:
        runtime = first_env_path(env, "RUNTIME_DIRECTORY")
        path = (runtime if runtime is not None else state_dir()) / "control.sock"
    if len(os.fsencode(path)) > UNIX_SOCKET_MAX:
        why = f"a unix socket path is at most {UNIX_SOCKET_MAX} bytes, got {len(os.fsencode(path))}: {path}"
        raise doc.error("control_socket", why, node)
    return path
