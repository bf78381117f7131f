"""HTML reports: the generic writer (tables, figures, copied images, atomic replacement) and
``cascade eval --report DIR`` with and without ``--compare``, checked against the JSON the same
command prints."""

import html
import json
import re
import struct

import pytest

from cascade.api.cli import main
from cascade.eval.plots import line_chart
from cascade.eval.report import Figure, Image, Section, Table, Text, flat_rows, result_report, write_report
from cascade.eval.run_report import deltas, wins_ties_losses
from cascade.retrieval.errors import InvalidInput

pytest.importorskip("matplotlib")


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", data[16:24])


def cells(page: str) -> list[list[str]]:
    """Every table row's cells, unescaped."""
    return [
        [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", page, re.S)
        if "<td" in row
    ]


def test_write_report_blocks_and_replacement(tmp_path):
    curve = line_chart(tmp_path / "curve.png", {"ours": [(1, 0.5), (2, 0.7)]}, "batch", "docs/s")
    sections = [
        Section("Numbers", [Text("a <b>bold</b> claim"), Table(["name", "value"], [["x", 0.123456], ["y", 3]])]),
        Section("Pictures", [
            Figure("bars", lambda fig: fig.add_subplot().bar([1, 2], [3, 4]), caption="two bars"),
            Image("curve", curve, caption="a bench curve"),
        ]),
    ]  # fmt: skip
    page_path = write_report(tmp_path / "r", "Title & more", sections, subtitle="sub")
    page = page_path.read_text()
    assert "<title>Title &amp; more</title>" in page and "a &lt;b&gt;bold&lt;/b&gt; claim" in page
    assert cells(page) == [["x", "0.1235"], ["y", "3"]]
    assert re.findall(r'<img src="([^"]+)"', page) == ["bars.png", "curve.png"]
    assert png_size(tmp_path / "r" / "bars.png") == (770, 440)  # 7 x 4 inches at 110 dpi
    assert (tmp_path / "r" / "curve.png").read_bytes() == curve.read_bytes()
    # a second report replaces the first whole: no stale figure stays behind
    write_report(tmp_path / "r", "again", [Section("only text", [Text("hi")])])
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["index.html"]


def test_write_report_refuses_what_it_would_destroy_or_misname(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InvalidInput, match="holds other files"):
        write_report(tmp_path / "mine", "t", [])
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    (tmp_path / "f").write_text("x")
    with pytest.raises(InvalidInput, match="is a file"):
        write_report(tmp_path / "f", "t", [])
    fig = Figure("same", lambda fig: None)
    with pytest.raises(InvalidInput, match="used twice: same"):
        write_report(tmp_path / "new", "t", [Section("a", [fig, fig])])
    with pytest.raises(InvalidInput, match="figure name '../up'"):
        write_report(tmp_path / "new", "t", [Section("a", [Figure("../up", lambda fig: None)])])
    assert not (tmp_path / "new").exists()


def test_a_bench_result_as_a_report(tmp_path):
    result = {"benchmark": "x", "ours": {"qps": 120.5, "settings": [1, 2]}, "ratio": 2}
    assert flat_rows(result) == [
        ["benchmark", "x"],
        ["ours.qps", 120.5],
        ["ours.settings", "[1, 2]"],
        ["ratio", 2],
    ]
    curve = line_chart(tmp_path / "recall.png", {"ours": [(10, 0.9), (100, 0.95)]}, "qps", "recall")
    page = result_report(tmp_path / "bench", "Benchmark: x", result, [curve]).read_text()
    assert re.findall(r"<h2>(.*?)</h2>", page) == ["Figures", "Result"]
    assert re.findall(r'<img src="([^"]+)"', page) == ["recall.png"]
    assert cells(page) == [
        ["benchmark", "x"],
        ["ours.qps", "120.5000"],
        ["ours.settings", "[1, 2]"],
        ["ratio", "2"],
    ]


def test_deltas_and_wins_ties_losses():
    d = deltas({"a": 0.5, "b": 0.2, "c": 0.3, "x": 1.0}, {"a": 0.25, "b": 0.2, "c": 0.4, "y": 0.0})
    assert d == pytest.approx({"a": 0.25, "b": 0.0, "c": -0.1})
    assert wins_ties_losses(d) == (1, 1, 1)


def run_cli(args, capfd):
    code = main(args)
    out, err = capfd.readouterr()
    return code, out, err


def test_eval_report_with_and_without_compare(toy_dataset, tmp_path, capfd):
    base_run = tmp_path / "bm25.trec"
    args = ["eval", "--dataset", str(toy_dataset), "--pipeline", "bm25", "--metrics", "ndcg@10,recall@100"]
    code, out, err = run_cli(
        [*args, "--run-out", str(base_run), "--report", str(tmp_path / "one"), "--json"], capfd
    )
    assert code == 0, err
    summary = json.loads(out)
    page = (tmp_path / "one" / "index.html").read_text()
    assert summary["report"] == str(tmp_path / "one" / "index.html")
    rows = cells(page)
    assert rows[:2] == [
        ["ndcg@10", f"{summary['metrics']['ndcg@10']:.4f}"],
        ["recall@100", f"{summary['metrics']['recall@100']:.4f}"],
    ]
    assert re.findall(r'<img src="([^"]+)"', page) == ["per-query.png"]
    png_size(tmp_path / "one" / "per-query.png")
    assert "Hardest queries by ndcg@10" in page

    # a baseline that differs on q1 only: BM25's run with q1's first and last documents swapped
    lines = base_run.read_text().splitlines()
    q1 = [line.split() for line in lines if line.startswith("q1 ")]
    q1[0][2], q1[-1][2] = q1[-1][2], q1[0][2]
    other = tmp_path / "swapped.trec"
    other.write_text(
        "\n".join([" ".join(p) for p in q1] + [x for x in lines if not x.startswith("q1 ")]) + "\n"
    )
    code, out, err = run_cli(
        [*args, "--compare", str(other), "--report", str(tmp_path / "two"), "--json"], capfd
    )
    assert code == 0, err
    summary = json.loads(out)
    page = (tmp_path / "two" / "index.html").read_text()
    assert re.findall(r'<img src="([^"]+)"', page) == ["waterfall-ndcg-10.png", "waterfall-recall-100.png"]
    for name in ("waterfall-ndcg-10.png", "waterfall-recall-100.png"):
        png_size(tmp_path / "two" / name)
    rows = cells(page)
    sig = summary["significance"]["ndcg@10"]
    got = summary["metrics"]["ndcg@10"]
    assert rows[0] == ["ndcg@10", f"{sig['baseline_mean']:.4f}", f"{got:.4f}", f"{got - sig['baseline_mean']:.4f}",
                       f"{sig['t_test_p']:.4f}", f"{sig['randomization_p']:.4f}"]  # fmt: skip
    wtl = [r for r in rows if r[0] == "ndcg@10" and len(r) == 7]
    gain = got - sig["baseline_mean"]
    assert gain > 0 and wtl[0][1:4] == ["1", "1", "0"]  # q1 improved, q2 tied
    changed = [r for r in rows if r[0] == "q1"]
    assert len(changed) == 1 and changed[0][1] == "stem cell neurons"
    top_bm25 = [line.split()[2] for line in lines if line.startswith("q1 ")][:3]
    assert [ln.split()[0] for ln in changed[0][5].splitlines()] == top_bm25
    assert "★1 Neurons" in changed[0][5] or "★1 Stem cells" in changed[0][5]

    # bad input: one line, exit 2, and a directory of other files is left alone
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x.txt").write_text("x")
    code, _, err = run_cli([*args, "--report", str(tmp_path / "busy")], capfd)
    assert code == 2 and err.count("\n") == 1 and "holds other files" in err
