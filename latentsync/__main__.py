"""``python -m latentsync``: see :mod:`latentsync.cli`."""

import sys

from latentsync.cli import main

if __name__ == "__main__":
    sys.exit(main())
