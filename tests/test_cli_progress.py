"""Progress on the terminal (``cli.progress``) for the demo, the audit and the benches: every long
stage shows its count, rate and time left; in a log (stderr not a terminal) a stage writes a few
whole lines, not a carriage-return stream; the miniature sampler reports after every DDIM step."""
import io
import time

import pytest
import torch

from finextract.cli import progress
from finextract.miniature import ddim
from finextract.miniature.demo import BASE
from finextract.miniature.model import load_pipeline
from finextract.sampling.driver import generate


class Terminal(io.StringIO):
    def isatty(self):
        return True


def slow_sample(noise, _seeds):
    time.sleep(0.01)
    return noise


def test_a_long_stage_in_a_log_writes_few_whole_lines_with_rate_and_time_left(monkeypatch):
    """300 chunks over ~3 s through the real driver, one progress call each, into a file: a line
    per LOG_INTERVAL (+ the first and the last), each with the count, the time left and the rate."""
    monkeypatch.setattr(progress, "LOG_INTERVAL", 1.0)
    log = io.StringIO()
    start = time.monotonic()
    generate(range(300), 1, 0, (1, 2, 2), slow_sample, progress=progress.reporter("sampling", file=log))
    seconds = time.monotonic() - start
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and text.endswith("\n")
    assert 3 <= len(lines) <= seconds / 1.0 + 2, lines
    assert lines[0].startswith("sampling: 0/300 images [00:00 elapsed, ? left")
    assert lines[-1].startswith("sampling: 300/300 images [")
    for line in lines[1:]:
        assert " left, " in line and " images/s]" in line and "?" not in line, line


def test_on_a_terminal_the_bar_redraws_in_place():
    screen = Terminal()
    report = progress.reporter("embed", file=screen)
    for done in range(1, 11):
        time.sleep(0.06)
        report(done, 10)
    text = screen.getvalue()
    assert text.count("\r") >= 2 and text.count("\n") == 1
    assert "embed: 100%|" in text and "10/10 images" in text and " left, " in text


def test_sampling_counts_images_and_resumed_work_is_not_in_the_rate():
    """A bar of images fed in denoising steps (scale = steps) with 5 images resumed: the rate
    counts only the 10 made here."""
    log = io.StringIO()
    bar = progress.bar("generating", 15, initial=5, scale=4, file=log)
    for step in range(1, 41):
        bar.to(5 * 4 + step)
    time.sleep(0.5)
    bar.close()
    last = log.getvalue().splitlines()[-1]
    assert last.startswith("generating: 15.0/15 images [")
    rate = float(last.split(", ")[-1].split()[0])
    assert rate == pytest.approx(10 / 0.5, rel=0.2)  # 15 / 0.5 if the resumed 5 counted


def test_phases_of_one_counter_get_their_own_bars():
    """ComfyUI's SSCDCluster reports embedding (N images) then clustering (thresholds tried)
    through one progress bar; each phase gets its bar and its unit."""
    log = io.StringIO()
    report = progress.phases([("embedding", "images"), ("clustering", "thresholds")], file=log)
    for done in (4, 8):
        report(done, 8)
    for done in (1, 2, 3, 3):  # the last one repeated, as ComfyUI clamps to the total
        report(done, 3)
    lines = log.getvalue().splitlines()
    assert [line.split(" [")[0] for line in lines] == [
        "embedding: 0/8 images", "embedding: 8/8 images", "clustering: 0/3 thresholds", "clustering: 3/3 thresholds"]

    log = io.StringIO()  # a phase that stops short of its total: the next starts when the count does
    report = progress.phases([("embedding", "images"), ("clustering", "thresholds")], file=log)
    for done, total in ((3, 6), (5, 6), (1, 6), (6, 6)):
        report(done, total)
    assert [line.split(" [")[0] for line in log.getvalue().splitlines()] == [
        "embedding: 0/6 images", "embedding: 5/6 images", "clustering: 0/6 thresholds", "clustering: 6/6 thresholds"]


def test_miniature_sampling_reports_after_every_ddim_step():
    """A chunk of 50 images is ~15 s on two cores: the demo's sampling reports per DDIM step,
    counting images × steps."""
    torch.set_num_threads(1)
    base = load_pipeline(BASE)
    seen = []
    ddim.sample_latents(base, None, "a photo", "direct", range(3), seed=1, steps=4, batch_size=2,
                        progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 12), (4, 12), (6, 12), (8, 12), (9, 12), (10, 12), (11, 12), (12, 12)]


def test_a_stage_is_timed_from_the_end_of_the_one_before():
    """clustering.extract reports a stage first after its first batch: the time before that
    report is the stage's too (else a 4-image embedding reads as thousands of images/s)."""
    log = io.StringIO()
    report = progress.stages("demo", file=log)
    time.sleep(0.4)  # the whole embedding, reported once at its end
    report("embed", 4, 4)
    time.sleep(0.4)
    report("cluster", 5, 5)
    lines = log.getvalue().splitlines()
    rates = [float(line.split(", ")[-1].split()[0]) for line in lines if line.split(": ")[2].startswith(("4/4", "5/5"))]
    assert [line.split(" [")[0] for line in lines] == [
        "demo: embed: 0/4 images", "demo: embed: 4/4 images", "demo: cluster: 0/5 thresholds",
        "demo: cluster: 5/5 thresholds"]
    assert rates == [pytest.approx(4 / 0.4, rel=0.2), pytest.approx(5 / 0.4, rel=0.2)]


def test_work_found_done_counts_but_stays_out_of_the_rate_and_notes_are_whole_lines(monkeypatch):
    """The Ray driver's bar of shards: shards an earlier run saved come back at once, one by one;
    they move the count but not the rate (6 found with 2 made in 0.4 s: about 5 shards/s, not
    20), and an event line between the bar's lines stays a line of its own."""
    monkeypatch.setattr(progress, "LOG_INTERVAL", 0.0)
    log = io.StringIO()
    bar = progress.bar("ray: shards done", 10, unit="shards", file=log)
    time.sleep(0.2)
    bar.update(1)
    bar.found_done(6)
    bar.note("  cat: merged")
    time.sleep(0.2)
    bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "  cat: merged" in lines and "" not in lines, lines
    assert lines[-1].startswith("ray: shards done: 8/10 shards ["), lines
    after = [line for line in lines if line.startswith("ray: shards done: 8/10")]  # the update's line and the close's
    assert len(after) == 2 and all(2 < float(line.split(" shards/s]")[0].rsplit(" ", 1)[-1]) < 8 for line in after), lines
