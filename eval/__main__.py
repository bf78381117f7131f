"""``python -m eval ...`` is ``cascade eval ...``."""

import sys

from api.cli import main

sys.exit(main(["eval", *sys.argv[1:]]))
