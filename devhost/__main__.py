"""``python -m devhost <command>``: see devhost/cli.py."""

import sys

from devhost.cli import main

sys.exit(main())
