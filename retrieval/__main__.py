"""``python -m retrieval ...`` is ``cascade search ...``."""

import sys

from api.cli import main

sys.exit(main(["search", *sys.argv[1:]]))
