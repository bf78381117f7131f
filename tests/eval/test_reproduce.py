"""The reproduction matrix: rows run, compare and fail as they should; the README is rendered from it."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cascade.eval.reproduce import MATRIX_FILE, load_matrix, markdown_table, select
from cascade.retrieval.errors import InvalidInput, NotFound

README = Path(__file__).resolve().parents[2] / "README.md"


def _cascade(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cascade", *args], capture_output=True, text=True)


def _toy_matrix(tmp_path: Path, toy_dataset: Path) -> Path:
    # BM25 on the toy data puts both relevant documents of q1 and the one of q2 on top:
    # nDCG@10 and recall@100 are exactly 1.
    data = {
        "datasets": {"toy": "{shared}/toy"},
        "conditions": {"bm25": {"pipeline": "bm25", "ci": True},
                       "bm25-again": {"pipeline": {"retrievers": [{"retriever": "bm25", "depth": 10}], "k": 10}}},
        "expected": [
            {"condition": "bm25", "dataset": "toy", "metric": "ndcg@10", "expected": 1.0, "tolerance": 0.0,
             "source": "measured", "ref": "hand-checked"},
            {"condition": "bm25", "dataset": "toy", "metric": "recall@100", "expected": 1.0, "tolerance": 0.0,
             "source": "measured", "ref": "hand-checked"},
            {"condition": "bm25-again", "dataset": "toy", "metric": "ndcg@10", "expected": 0.5, "tolerance": 0.01,
             "source": "measured", "ref": "deliberately wrong"},
        ],
    }  # fmt: skip
    path = tmp_path / "matrix.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_rows_compare_expected_with_measured_and_a_miss_fails(tmp_path, toy_dataset):
    matrix = _toy_matrix(tmp_path, toy_dataset)
    shared = str(toy_dataset.parent)
    p = _cascade("reproduce", "--matrix", str(matrix), "--shared", shared, "--json")
    assert p.returncode == 1, p.stderr  # one row misses its figure
    out = json.loads(p.stdout)
    rows = {(r["condition"], r["metric"]): r for r in out["rows"]}
    assert out["pass"] is False and len(rows) == 3
    assert rows["bm25", "ndcg@10"]["got"] == 1.0 and rows["bm25", "ndcg@10"]["pass"] is True
    assert rows["bm25", "recall@100"]["pass"] is True
    miss = rows["bm25-again", "ndcg@10"]
    assert miss["pass"] is False and miss["got"] == 1.0 and miss["delta"] == pytest.approx(0.5)
    assert set(miss) >= {"condition", "dataset", "metric", "expected", "got", "delta", "pass"}

    p = _cascade(
        "reproduce", "--matrix", str(matrix), "--shared", shared, "--ci", "--report", str(tmp_path / "rep")
    )
    assert p.returncode == 0, p.stderr
    page = (tmp_path / "rep" / "index.html").read_text()
    assert (
        "2 of 2 rows reach their figure" in page and (tmp_path / "rep" / "deltas.png").stat().st_size > 1000
    )
    lines = p.stdout.splitlines()
    assert lines[0].split() == ["condition", "dataset", "metric", "expected", "got", "delta", "pass"]
    assert [line.split()[-1] for line in lines[2:]] == ["yes", "yes"]


def test_bad_matrix_and_unknown_conditions_are_one_line_errors(tmp_path, toy_dataset):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"datasets": {}, "conditions": {}, "expected": [
        {"condition": "nope", "dataset": "x", "metric": "ndcg@10", "expected": 1, "tolerance": 0,
         "source": "measured", "ref": "-"}]}))  # fmt: skip
    with pytest.raises(InvalidInput, match="unknown condition 'nope'"):
        load_matrix(bad)
    p = _cascade("reproduce", "--matrix", str(bad))
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
    with pytest.raises(NotFound, match="valid: bm25"):
        select(load_matrix(), ["no-such-condition"])
    p = _cascade("reproduce", "--only", "no-such-condition")
    assert p.returncode == 2 and p.stderr.startswith("cascade: error: unknown condition")


def test_the_shipped_matrix_is_valid_and_the_readme_table_is_rendered_from_it():
    matrix = load_matrix(MATRIX_FILE)
    assert {r.source for r in matrix.expected} <= {"published", "reference", "measured"}
    assert select(matrix, ci=True), "CI runs some rows"
    text = README.read_text()
    block = re.search(r"<!-- reproduce-table -->\n(.*?)\n<!-- /reproduce-table -->", text, re.S)
    assert block, "README lacks the reproduce-table markers"
    assert block.group(1).strip() == markdown_table(matrix).strip(), "regenerate: cascade reproduce --table"


@pytest.mark.slow
def test_ci_rows_reproduce_on_scifact(scifact):
    p = _cascade("reproduce", "--ci", "--json")
    assert p.returncode in (0, 1), p.stderr[-2000:]
    out = json.loads(p.stdout)
    failed = [r for r in out["rows"] if not r["pass"]]
    assert not failed, failed
    assert {r["condition"] for r in out["rows"]} >= {"bm25", "splade-tiny"}
