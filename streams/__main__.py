"""`python -m streams` is the `leadscore` command."""

import sys

from streams.cli import main

sys.exit(main())
