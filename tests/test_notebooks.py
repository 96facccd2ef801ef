"""Every notebook in notebooks/ runs from a clean checkout, top to bottom, on small simulated data
against the test database (nbclient, a fresh kernel each), and is stored without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import db_env, one_backend

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

pytestmark = pytest.mark.db


def test_there_are_notebooks_and_they_are_stored_without_outputs():
    import nbformat

    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_"]
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        nbformat.validate(book)
        code = [c for c in book.cells if c.cell_type == "code"]
        assert code and all(not c.outputs and c.execution_count is None for c in code), f"{path.name}: outputs not stripped"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, db, tmp_path, monkeypatch):
    """On MariaDB (the suite's time): the notebooks use only the pipeline's own functions."""
    import nbformat
    from nbclient import NotebookClient

    one_backend(db, "mysql")
    env = {**db_env(db["backend"], db["url"], db["prefix"], db["store"]), "SCOPELINE_NOTEBOOK_DIR": str(tmp_path / "work"),
           "SCOPELINE_HOME": str(tmp_path / "home"), "MPLBACKEND": "Agg"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)  # the kernel inherits this process's environment
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert os.listdir(tmp_path / "work")
