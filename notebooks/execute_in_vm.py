"""Execute the notebooks in the classroom VM and commit-ready copy them back, with their outputs.

    python3 notebooks/execute_in_vm.py            # every notebooks/NN-*.ipynb (one boot, ~15 min + the runs)
    python3 notebooks/execute_in_vm.py 03 05      # only those

As root, under the test lock on a shared machine (`flock /tmp/labctl-tests.lock python3 ...`). It boots
the lab image (vagrant/labvm.py: pure cgroup v2, kernel 6.1, kprobes), copies this tree in, provisions
it, runs `jupyter nbconvert --execute --to notebook` on each notebook in the guest as the classroom's
Jupyter would (root, the guest's venv), copies the executed notebooks back and writes them over
notebooks/NN-*.ipynb, made small: no execution timestamps, long text outputs cut, each notebook held
under MAX_BYTES. A notebook that fails in the guest is left as it was, and the script says which cell
failed. The cells themselves come from the generators (make_NN_*.py): regenerate first, then run this.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent
REPO = NOTEBOOKS.parent
sys.path.insert(0, str(REPO / "vagrant"))
import labvm  # noqa: E402

MAX_BYTES = 1 << 20          # per notebook
MAX_TEXT = 6000              # characters kept of one text output (stream or text/plain)
CELL_TIMEOUT = 1800          # seconds per cell in the guest (TCG runs code 10-20x slower)


def guest_script(names: list[str]) -> str:
    """Run each notebook in the guest; the executed ones go to /tmp/executed, the errors to their .log."""
    runs = "\n".join(
        f"( cd /vagrant/notebooks && timeout 3600 /vagrant/.venv/bin/jupyter nbconvert --execute --to notebook "
        f"--ExecutePreprocessor.timeout={CELL_TIMEOUT} --ExecutePreprocessor.kernel_name=python3 "
        f"--InlineBackend.figure_formats=png --output-dir /tmp/executed {name} ) > /tmp/executed/{name}.log 2>&1 "
        f"&& echo \"executed {name}\" || echo \"FAILED {name} (log: /tmp/executed/{name}.log)\""
        for name in names)
    return "rm -rf /tmp/executed && mkdir -p /tmp/executed\n" + runs


def shrink(nb) -> None:
    """What a repository browser needs of an executed notebook, and no more."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and len(out.get("text", "")) > MAX_TEXT:
                out["text"] = out["text"][:MAX_TEXT] + f"\n[... cut by execute_in_vm.py: {len(out['text'])} characters]\n"
            plain = out.get("data", {}).get("text/plain")
            if isinstance(plain, str) and len(plain) > MAX_TEXT:
                out["data"]["text/plain"] = plain[:MAX_TEXT] + "\n[... cut]"


def adopt(executed: Path, committed: Path) -> str:
    """Write the executed notebook over the committed one, if its cells are the committed cells."""
    nb = nbformat.read(executed, as_version=4)
    ours = nbformat.read(committed, as_version=4)
    if [(c.cell_type, c.source) for c in nb.cells] != [(c.cell_type, c.source) for c in ours.cells]:
        return f"{committed.name}: the executed cells differ from the committed ones, left unchanged"
    shrink(nb)
    text = nbformat.writes(nb) + "\n"
    if len(text.encode()) > MAX_BYTES:
        return f"{committed.name}: {len(text.encode())} bytes with outputs (> {MAX_BYTES}), left unchanged"
    committed.write_text(text)
    images = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    return f"{committed.name}: written with outputs, {images} figure(s), {len(text.encode()) // 1024} KiB"


def main(argv: list[str]) -> int:
    chosen = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb") if not argv or p.name[:2] in argv)
    if not chosen:
        print(f"no notebook matches {argv}", file=sys.stderr)
        return 2
    image = labvm.build_image()
    failed = 0
    with labvm.GuestVM(image) as vm, tempfile.TemporaryDirectory(prefix="labctl-nb-") as tmp:
        print(f"execute_in_vm: guest up in {vm.boot_seconds:.0f} s", flush=True)
        vm.copy_tree(REPO)
        vm.provision()
        result = vm.run(guest_script([p.name for p in chosen]), timeout=3600 * len(chosen),
                        stream=lambda line: print(f"[guest] {line}", flush=True))
        copied = {p.name: p for p in labvm.copy_back(vm, "/tmp/executed", Path(tmp))}
        for nb in chosen:
            if f"executed {nb.name}" in result.stdout and nb.name in copied:
                print(adopt(copied[nb.name], nb))
            else:
                failed += 1
                log = copied.get(f"{nb.name}.log")
                tail = log.read_text(errors="replace")[-2500:] if log else "(no log)"
                print(f"{nb.name}: FAILED in the guest, left unchanged; the end of its log:\n{tail}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
