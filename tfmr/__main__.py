"""`python -m tfmr` is the `tfmr` command."""

import sys

from .cli import main

sys.exit(main())
