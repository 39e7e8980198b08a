"""What every notebooks/make_NN_*.py shares: it writes its cells as a notebook without outputs.

    python notebooks/make_03_cgroups.py            # rewrites notebooks/03-cgroups.ipynb
    python notebooks/make_03_cgroups.py OUT.ipynb  # writes OUT.ipynb instead (tests compare the two)

Cell ids are numbered rather than random, so running a generator again changes no byte of its notebook.
The committed notebooks also carry outputs, from a run in the classroom VM: after regenerating one, run
`flock /tmp/labctl-tests.lock python3 notebooks/execute_in_vm.py NN` (as root) to give it outputs again
(tests/test_notebooks_generated.py compares the cells only).
"""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_notebook

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def write_notebook(cells: list, name: str) -> None:
    """Write `cells` to the path given on the command line, or to notebooks/NAME."""
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name(name)
    for number, cell in enumerate(cells):
        cell.id = f"cell-{number:02d}"
    nbformat.write(new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC}), path)
