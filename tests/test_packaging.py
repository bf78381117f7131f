"""The distribution installs one import package, ``cascade``, mapped from the card's folders."""

import shutil
import subprocess
import sys
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ["retrieval", "rerank", "indexing", "eval", "api"]


def _declared_packages() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]


def test_every_package_folder_is_declared():
    found = {"cascade"} | {
        "cascade." + ".".join(p.parent.relative_to(ROOT).parts)
        for top in FOLDERS
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert found == set(_declared_packages())


@pytest.mark.slow
def test_wheel_installs_cascade_and_nothing_else(tmp_path):
    dist = tmp_path / "dist"
    leftovers = [ROOT / "build"] if not (ROOT / "build").exists() else []  # setuptools builds in-tree
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(ROOT)],
        capture_output=True, text=True,
    )  # fmt: skip
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = dist.glob("cascade_search-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith("tests/") or "/tests/" in n]
    assert "cascade/eval/presets/bm25.yaml" in names
    assert {f"cascade/api/static/{f}" for f in ("index.html", "app.js", "app.css")} <= set(names)  # the console

    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env)
    py = env / "bin" / "python"
    site = Path(subprocess.check_output([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())  # fmt: skip
    before = {p.name for p in site.iterdir()}
    # install with this interpreter's pip into the fresh venv's site-packages (no network, no deps)
    inst = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert inst.returncode == 0, inst.stderr[-2000:]
    added = {p.name for p in site.iterdir()} - before
    modules = {n for n in added if not n.endswith((".dist-info", ".pth")) and n != "bin"}
    assert modules == {"cascade"}, added
    # the installed package imports from the venv, not from this checkout
    # (the bare venv has no numpy: find the modules without running them)
    code = "import importlib.util as u; print(u.find_spec('cascade.retrieval.sparse.bm25').origin)"
    out = subprocess.run([str(py), "-I", "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(site / "cascade" / "retrieval" / "sparse" / "bm25.py")
