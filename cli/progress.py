"""Progress on the terminal: the one place that draws it, for ``finextract demo``, ``finextract
audit`` and the benchmarks that reuse the demo's sampling.

The core reports plain ``progress(done, total)`` callbacks and knows nothing of terminals; this
module turns them into tqdm bars with the count, the rate and the time left. On a terminal a bar
redraws in place (every half second at most); when stderr is a file or a pipe (a CI log,
``make demo 2> log``) each update is its own line, at most one every :data:`LOG_INTERVAL` seconds,
so a log stays readable and small instead of filling with carriage returns.
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Sequence

from tqdm import tqdm

TTY_INTERVAL = 0.5
"""Seconds between redraws of a bar on a terminal."""
LOG_INTERVAL = 5.0
"""Seconds between lines when the stream is not a terminal."""
STAGE_UNITS = {"prefilter": "images", "embed": "images", "cluster": "thresholds"}
"""What each stage of ``clustering.extract`` counts (its ``progress(stage, done, total)``)."""


def _is_terminal(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


class Bar(tqdm):
    """A tqdm bar over ``total`` things (``unit``), with the time left written out. ``scale``
    converts the units a core callback counts into the bar's things: the sampler counts one unit
    per image per denoising step, so a bar of images over ``steps``-step sampling has ``scale =
    steps`` and moves after every step. ``initial`` things are done before this process started
    (resumed work): the rate and the time left count only what this process makes. ``since``
    (``time.time()``) is when the work began, if before the bar: a core function reports first
    after its first batch, and that batch's time belongs in the rate."""

    monitor_interval = 0  # no helper thread: every bar here updates at a fixed interval

    def __init__(self, label: str, total: float, unit: str = "images", initial: float = 0, scale: float = 1,
                 file=None, since: float | None = None):
        file = sys.stderr if file is None else file
        self.terminal, self.scale, self._lines = _is_terminal(file), scale, 0
        count = "{n:.0f}/{total:.0f}" if scale == 1 else "{n:.1f}/{total:.0f}"
        bar = "{percentage:3.0f}%|{bar:20}| " if self.terminal else ""
        super().__init__(desc=label, total=total, initial=initial, unit=" " + unit, file=file,
                         mininterval=TTY_INTERVAL if self.terminal else LOG_INTERVAL, miniters=1,
                         bar_format="{desc}: " + bar + count + "{unit} [{elapsed} elapsed, {remaining} left, "
                                    "{rate_noinv_fmt}]")
        if since is not None:
            self.start_t = self.last_print_t = since

    def status_printer(self, file):
        """tqdm's own printer on a terminal; elsewhere one line per update, a line break written
        before every line but the first (tqdm ends the last one when the bar closes)."""
        if self.terminal:
            return super().status_printer(file)

        def line(text: str) -> None:
            if text:
                file.write(("\n" if self._lines else "") + text)
                file.flush()
                self._lines += 1
        return line

    def to(self, done: float) -> None:
        """Move to ``done`` units of the core's count (``done / scale`` things)."""
        self.update(done / self.scale - self.n)

    def note(self, text: str) -> None:
        """A line of its own beside the bar (an event of the job): above the bar on a terminal,
        between the bar's lines in a log."""
        if self.terminal:
            self.write(text, file=self.fp)
        else:
            self.fp.write(("\n" if self._lines else "") + text)
            self.fp.flush()
            self._lines += 1

    def found_done(self, things: float) -> None:
        """Count ``things`` found done once the bar runs (shards an earlier run saved, which a
        cluster's workers report one by one): like ``initial``, they move the count but stay out
        of the rate and the time left; the next line shows them."""
        self.n += things
        self.initial += things
        self.last_print_n += things  # nor in tqdm's moving average of the rate


def bar(label: str, total: float, unit: str = "images", initial: float = 0, scale: float = 1,
        file=None) -> Bar:
    """A :class:`Bar`; close it (or use it as a context manager) when the stage ends."""
    return Bar(label, total, unit, initial, scale, file)


def phases(steps: Sequence[tuple[str, str]], scale: float = 1, file=None,
           clock: dict | None = None) -> Callable[[float, float], None]:
    """A ``progress(done, total)`` callback for a job that reports phase after phase through one
    counter (ComfyUI's progress bar of a node): a bar per phase, ``steps`` = (label, unit) of each.
    A new total, or a count that starts over, begins the next phase (the last one repeats); a bar
    closes when its count reaches its total. A phase's time runs from the end of the one before
    (from this call for the first), kept in ``clock`` (``{"since": time.time()}``; callbacks that
    share one run one after another)."""
    state = {"bar": None, "phase": -1, "finished": None}
    clock = {"since": time.time()} if clock is None else clock

    def report(done: float, total: float) -> None:
        current, things, count = state["bar"], total / scale, done / scale
        if current is None and state["finished"] == things and count >= things:
            return  # the phase that just ended, reported once more
        if current is None or things != current.total or count < current.n:
            if current is not None:
                current.close()
                clock["since"] = time.time()
            state["phase"] = min(state["phase"] + 1, len(steps) - 1)
            label, unit = steps[state["phase"]]
            current = state["bar"] = Bar(label, things, unit, scale=scale, file=file, since=clock["since"])
        current.to(done)
        if current.n >= current.total:
            current.close()
            state["bar"], state["finished"], clock["since"] = None, things, time.time()
    return report


def reporter(label: str, unit: str = "images", scale: float = 1, file=None) -> Callable[[float, float], None]:
    """A ``progress(done, total)`` callback drawing one bar (a new one if the count starts over)."""
    return phases([(label, unit)], scale, file)


def stages(label: str, file=None) -> Callable[[str, int, int], None]:
    """The ``progress(stage, done, total)`` of ``clustering.extract``: one bar per stage, named
    ``label: stage`` and counting what the stage counts (:data:`STAGE_UNITS`)."""
    bars: dict[str, Callable[[float, float], None]] = {}
    clock = {"since": time.time()}  # the stages run one after another

    def report(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = phases([(f"{label}: {stage}", STAGE_UNITS.get(stage, "steps"))], file=file, clock=clock)
        bars[stage](done, total)
    return report
