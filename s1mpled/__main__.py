"""``python -m s1mpled`` is the ``s1mpled`` command."""

import sys

from s1mpled.cli import main

sys.exit(main())
