"""s1mpled: the operations daemon of S1mpleTrader.

The package is organised one module per concept of the architecture's chapter 6 (see DEVELOPERS.md).
Importing it is cheap on purpose: nothing here imports ccxt, which only the live environment needs.
"""

__version__ = "0.1.0"
