"""``python -m phe_fl``: the ``phe-fl`` command, for when the script is not on PATH."""

from __future__ import annotations

import sys

from phe_fl.cli import main

if __name__ == "__main__":
    sys.exit(main())
