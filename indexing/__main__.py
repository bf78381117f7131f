"""``python -m indexing ...`` is ``cascade index ...``."""

import sys

from api.cli import main

sys.exit(main(["index", *sys.argv[1:]]))
