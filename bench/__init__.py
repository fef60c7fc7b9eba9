"""Benchmarks: commands (``python -m finextract.bench.<name>``) that print measurements taken side
by side in one run. Not tests, and not shipped in the wheel: they run from a checkout, where they
share the tests' synthetic fixtures (:func:`test_fixture`)."""
import importlib.util
import pathlib

TESTS = pathlib.Path(__file__).resolve().parent.parent / "tests"


def test_fixture(relative: str):
    """A fixture module of the checkout's ``tests/`` (e.g. ``"planted"``, ``"host/sd15_models"``)."""
    path = TESTS / f"{relative}.py"
    if not path.is_file():
        raise SystemExit(f"{path}: benchmarks run from a checkout of the repository (tests/ holds their fixtures)")
    spec = importlib.util.spec_from_file_location("finextract_tests_" + relative.replace("/", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


test_fixture.__test__ = False  # not a pytest test, whatever its name
