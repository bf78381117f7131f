import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scifact"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own index cache: no test depends on another's leftovers."""
    monkeypatch.setenv("CASCADE_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def scifact() -> Path:
    if not (SCIFACT / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not found at {SCIFACT}")
    return SCIFACT


def write_beir(root: Path, docs: list[dict], queries: list[dict], qrels: list[tuple[str, str, int]]) -> Path:
    """A BEIR-layout dataset on disk, built from plain lists."""
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{r}\n" for q, d, r in qrels)
    )
    return root


TOY_DOCS = [
    {"_id": "d1", "title": "Stem cells", "text": "Stem cells differentiate into neurons."},
    {"_id": "d2", "title": "Heart", "text": "The heart pumps blood through arteries and veins."},
    {"_id": "d3", "title": "Neurons", "text": "Neurons transmit signals; stem cell therapy repairs neurons."},
    {"_id": "d4", "title": "Blood", "text": "Blood carries oxygen. Red blood cells carry hemoglobin."},
]
TOY_QUERIES = [{"_id": "q1", "text": "stem cell neurons"}, {"_id": "q2", "text": "blood oxygen"}]
TOY_QRELS = [("q1", "d3", 1), ("q1", "d1", 1), ("q2", "d4", 2)]


@pytest.fixture
def toy_dataset(tmp_path) -> Path:
    return write_beir(tmp_path / "toy", TOY_DOCS, TOY_QUERIES, TOY_QRELS)


@pytest.fixture
def in_own_process(request) -> bool:
    """Run the calling test again in a fresh interpreter and report whether that happened.

    Lucene's JVM (through pyjnius) and the signal handlers that torch, numba and Ray install
    do not mix in one long-lived process: started late in a full test session, the JVM has
    crashed the whole run. A test that starts Java asks for this fixture and returns at once
    when it is True; the child process runs the body and its result is asserted here.
    """
    if os.environ.get("CASCADE_TEST_ISOLATED") == request.node.nodeid:
        return False
    root = Path(request.config.rootpath)
    env = {**os.environ, "CASCADE_TEST_ISOLATED": request.node.nodeid}
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", request.node.nodeid],
        capture_output=True, text=True, env=env, cwd=root,
    )  # fmt: skip
    assert p.returncode == 0 and " passed" in p.stdout, p.stdout[-4000:] + p.stderr[-2000:]
    return True


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs) for the whole test session; its workers import the
    project and the tests' helper modules."""
    ray = pytest.importorskip("ray")
    here = Path(__file__).resolve().parent
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(here), str(here.parent), *sys.path])}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture
def fp32_auto(monkeypatch):
    """``dtype="auto"`` resolves as on a CPU without bf16 instructions (fp32): parity tests
    against reference implementations run at the references' own precision. The bf16 path has
    guards of its own (tests/eval/test_precision_guard.py, the reproduction matrix)."""
    from cascade.retrieval import models

    monkeypatch.setattr(models, "cpu_bf16_flags", lambda: ())
