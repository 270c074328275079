"""``python -m tdlog``: the ``tdlog`` command line."""

import sys

from tdlog.cli import main

sys.exit(main())
