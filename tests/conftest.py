"""Import this checkout as the ``finextract`` package, whatever the folder is called and whether
or not it is pip-installed, so tests always run the code beside them."""
import importlib.util
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

_spec = importlib.util.spec_from_file_location(
    "finextract", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
_module = importlib.util.module_from_spec(_spec)
sys.modules["finextract"] = _module
_spec.loader.exec_module(_module)
