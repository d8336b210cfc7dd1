"""``python -m tools <command>``: see tools/cli.py."""

import sys

from tools.cli import main

sys.exit(main())
