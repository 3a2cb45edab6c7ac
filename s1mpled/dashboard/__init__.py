"""``s1mpled dashboard``: a read-only web page over every instance's control socket, a process of its own.

Why a separate process: the trading daemon stays small and its sandbox tight (no listening TCP port,
no HTTP parser, no browser-facing code in the process that holds the books). The dashboard is only a
client of each daemon's control socket (``subscribe``), and serves one page and one WebSocket on
127.0.0.1 by default (reach it through an SSH tunnel), optionally behind a token.

``view`` is the pure model (one instance's events → what the page shows), ``links`` the control-socket
clients (re-dialled with backoff), ``server`` the HTTP/WebSocket side (``websockets``). The daemon never
imports this package (tests/test_layering.py).
"""
