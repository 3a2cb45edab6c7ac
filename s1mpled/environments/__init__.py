"""Execution environments: where orders go (the IAPIConnector surface of the spec).

``paper_exchange`` is the pure, in-process simulated exchange of paper mode, ``feeds`` the pure
price feeds that drive it, and ``paper`` the adapter that persists and drives both. Live trading
talks to a real venue through its own adapter; paper mode never imports ccxt.
"""
