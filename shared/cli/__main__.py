"""`python -m shared.cli` runs the `mailfiler` command."""

import sys

from .main import main

sys.exit(main())
