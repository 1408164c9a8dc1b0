"""`python -m prunekit` runs the command-line interface (also what torchrun starts)."""

import sys

from prunekit.cli import main

sys.exit(main())
