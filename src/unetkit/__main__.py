"""`python -m unetkit` runs the console script (also what `torchrun -m unetkit` needs)."""

import sys

from unetkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
