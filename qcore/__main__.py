"""``python -m qcore``: the same as the ``qcore`` command."""

from __future__ import annotations

import sys

from qcore.cli import main

if __name__ == "__main__":
    sys.exit(main())
