"""`python -m netdicom2` runs the console script."""

import sys

from netdicom2.cli import main

sys.exit(main())
