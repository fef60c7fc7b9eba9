"""Import this checkout as the ``finextract`` package, whatever the folder is called and whether
or not it is pip-installed, so tests always run the code beside them."""
import importlib.util
import os
import pathlib
import sys

# Before torch loads: OpenMP's spin-waiting threads collapse on this 2-core machine shared by many
# processes (measured: a batch-2 MiniUNet forward takes 5.5 s with the default policy, 0.05 s passive).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = pathlib.Path(__file__).resolve().parent.parent

_spec = importlib.util.spec_from_file_location(
    "finextract", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
_module = importlib.util.module_from_spec(_spec)
sys.modules["finextract"] = _module
_spec.loader.exec_module(_module)

# The tests' own fixture modules (tests/planted.py …) import by name: ``from planted import …``.
sys.path.insert(0, str(ROOT / "tests"))
