"""`python -m prismq_queue`: the command line."""

import sys

from .cli import main

sys.exit(main())
