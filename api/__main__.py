"""``python -m cascade.api VERB ...``: the same verbs as the ``cascade`` command."""

from cascade.api.cli import main

raise SystemExit(main())
