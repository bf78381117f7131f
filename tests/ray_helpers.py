"""Importable by Ray workers (the tests put this folder on their PYTHONPATH)."""

import os
from pathlib import Path

from cascade.indexing.ray_build import CorpusSource


class KilledOnceCorpus(CorpusSource):
    """The first worker to open it dies on the spot (as if OOM-killed); later opens work."""

    def open(self):
        marker = Path(self.fields["marker"])
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return CorpusSource(self.path, self.fmt).open()
        os.close(fd)
        os._exit(1)
