"""``finextract demo`` checks every argument before any work and reports every problem at once,
without a traceback, leaving nothing behind (issue: first contact)."""
import subprocess
import sys

import pytest

from finextract.__main__ import main

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


def test_every_bad_argument_is_reported_at_once_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "inner" / "report"
    assert main(["demo", "--out", str(out), "-n", "3", "--steps", "0", "--concept", "nonexistent"]) == 2
    err = capsys.readouterr().err
    assert "nothing was run" in err and "Traceback" not in err
    assert "--concept nonexistent: no bundled concept set" in err and "cat" in err
    assert "-n 3: must be at least N0 = 5" in err and "--steps 0" in err
    assert not (tmp_path / "inner").exists()


@pytest.mark.parametrize("bad, expected", [
    (["-n", "-5"], "-n -5: must be at least N0 = 5"),
    (["-n", "0"], "-n 0: must be at least N0 = 5"),
    (["--out", "/proc/nope/demo"], "--out /proc/nope/demo: cannot write in /proc"),
])
def test_each_bad_argument_alone(bad, expected, tmp_path, capsys):
    argv = ["demo", "--out", str(tmp_path / "r")] + bad
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_a_file_as_output_folder(tmp_path, capsys):
    f = tmp_path / "file.txt"
    f.write_text("x")
    assert main(["demo", "--out", str(f / "sub")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def test_unknown_command_is_named():
    run = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
                          "import conftest; from finextract.__main__ import main; sys.exit(main(['bogus']))",
                          str(ROOT / "tests")], capture_output=True, text=True)
    assert run.returncode == 2 and "unknown command 'bogus'" in run.stderr and "demo" in run.stderr


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="must be at least N0"):
        main(["demo", "--debug", "--out", str(tmp_path / "r"), "-n", "1"])


def test_help_gives_the_whole_description_and_what_is_written(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["demo", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    description = " ".join(text.split("\n\n")[1].split())  # the paragraph between usage and options
    assert description.startswith("Audit the bundled miniature LoRA with FineXtract")
    assert "beside Direct sampling and the base model." in description and description.endswith(".")
    assert "pairs.png" in description and "finextract_report_00001.json" in description
    assert "--out" in text and "finextract-demo-<time>" in text


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="not a git checkout")
def test_the_default_report_folder_is_ignored_by_git():
    """`make demo` writes ./finextract-demo-<time> in the checkout (or wherever the command runs
    inside it): git must not see it."""
    for where in (ROOT, ROOT / "miniature"):
        report = where / "finextract-demo-20000101-000000" / "pairs.png"
        assert subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(report)]).returncode == 0, where
