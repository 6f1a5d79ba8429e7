"""Execute notebooks in place so their committed outputs match what nbval will see.

Usage: python scripts/run_notebooks.py [NOTEBOOK ...]   (default: notebooks/*.ipynb)

Needs nbclient (``pip install nbclient``), a development tool only. Each
notebook runs in a fresh kernel of this Python environment, from the
notebooks directory, as nbval runs it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(notebook, path)
    print(f"executed {path}")


def main(arguments: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    paths = [Path(argument) for argument in arguments] or sorted((root / "notebooks").glob("*.ipynb"))
    for path in paths:
        execute(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
