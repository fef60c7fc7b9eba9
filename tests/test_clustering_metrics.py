"""AS (Eq. 1), A-ESR@τ (Eq. 2) against hand-computed matrices, and the audit report."""
import json

import pytest
import torch
from PIL import Image

from finextract.clustering import metrics as m
from finextract.clustering import report as r
from finextract.clustering.report import build_report, render_report, write_report


def _unit_rows(sim):
    """Descriptors whose training x extracted cosine matrix is exactly ``sim`` (rows of ``sim`` are
    the training images' coordinates on the extracted images' orthonormal axes, plus a slack axis)."""
    sim = torch.tensor(sim, dtype=torch.float64)
    t, e = sim.shape
    extracted = torch.eye(e, t + e)
    slack = torch.sqrt(1 - (sim ** 2).sum(1))
    training = torch.cat([sim, torch.diag(slack)], dim=1)
    return training.float(), extracted.float()


# 3 training images x 2 extracted: best per row 0.8, 0.7, 0.3 -> AS 0.6
HAND = [[0.8, 0.1], [0.2, 0.7], [0.3, -0.2]]


def test_hand_computed_as_and_aesr():
    training, extracted = _unit_rows(HAND)
    s = m.similarity_matrix(training, extracted)
    assert torch.allclose(s, torch.tensor(HAND), atol=1e-6)
    assert m.average_similarity(s) == pytest.approx((0.8 + 0.7 + 0.3) / 3, abs=1e-6)
    assert m.extraction_success_rate(s, 0.6) == pytest.approx(2 / 3)
    # Eq. 2 is strict: a best score equal to τ is not a success
    assert m.extraction_success_rate(torch.tensor([[0.7], [0.5]]), 0.7) == 0.0
    assert m.best_matches(s) == ([0, 1, 0], pytest.approx([0.8, 0.7, 0.3], abs=1e-6))


def test_evaluate_reports_every_tau_copy_rate_and_centred():
    training, extracted = _unit_rows(HAND)
    out = m.evaluate(training, extracted, taus=[0.7, 0.25, 0.7], centred=True)
    assert out["taus"] == [0.25, 0.7]
    raw = out["raw"]
    assert raw["A-ESR"] == {"0.25": pytest.approx(1.0), "0.7": pytest.approx(1 / 3)}
    assert raw["copy_rate@0.75"] == pytest.approx(1 / 3) and out["copy_threshold"] == 0.75
    mean = torch.cat([training, extracted]).mean(0)
    centred = m.similarity_matrix(m.centre(training, mean), m.centre(extracted, mean))
    assert out["centred"]["AS"] == pytest.approx(float(centred.max(1).values.mean()))
    assert out["centring_reference"] == "training + extracted images"
    ref = m.evaluate(training, extracted, reference_mean=torch.zeros(training.shape[1]), centred=True)
    assert ref["centred"]["AS"] == pytest.approx(ref["raw"]["AS"], abs=1e-6)
    assert ref["centring_reference"] == "generated images"


def test_empty_sets_are_clear_errors():
    with pytest.raises(ValueError, match="training set is empty"):
        m.evaluate(torch.zeros(0, 512), torch.ones(2, 512))
    with pytest.raises(ValueError, match="extracted set is empty"):
        m.evaluate(torch.ones(2, 512), torch.zeros(0, 512))


def test_report_json_carries_provenance_version_descriptor(tmp_path):
    training, extracted = _unit_rows(HAND)
    metrics = m.evaluate(training, extracted)
    provenance = {"base": {"file": "base.safetensors", "sha256": "ab" * 32}, "seed": 7, "w_prime": 3.0}
    report = build_report(metrics, "sscd_disc_mixup int8", provenance,
                          clusters={"threshold": 0.5, "reference_mean": [0.0] * 512}, training_names=["a", "b", "c"])
    first, second = write_report(report, str(tmp_path)), write_report(report, str(tmp_path))
    assert first != second
    loaded = json.loads(open(first).read())
    assert loaded["provenance"] == provenance and loaded["descriptor"] == "sscd_disc_mixup int8"
    assert loaded["finextract_version"] == __import__("finextract").__version__
    assert loaded["metrics"]["raw"]["AS"] == pytest.approx(0.6, abs=1e-6)
    assert "reference_mean" not in loaded["clustering"]


def _row_colours(image, x):
    """The colours of the thumbnails met going down column ``x``, in order (each once)."""
    seen = []
    for y in range(image.height):
        pixel = image.getpixel((x, y))
        if pixel in {(255, 0, 0), (0, 255, 0), (0, 0, 255)} and (not seen or seen[-1] != pixel):
            seen.append(pixel)
    return seen


def test_report_image_rows_sorted_by_score():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    training = [Image.new("RGB", (40, 30), c) for c in colours]
    extracted = [Image.new("L", (20, 20), 10), Image.new("RGBA", (20, 50), (200, 200, 200, 255))]
    image = render_report(training, extracted, [0, 1, 0], [0.3, 0.8, 0.7], [0.6, 0.7])
    assert image.height >= 3 * 128
    # the first row is training image #1 (score 0.8), then #2 (0.7), then #0 (0.3)
    assert _row_colours(image, 6 + 64) == [colours[1], colours[2], colours[0]]


def test_every_line_of_the_report_image_is_named():
    """The label of each line across the bars, and what each row's score passes."""
    assert r.mark_labels([0.7, 0.6]) == [
        (0.6, "tau", "tau 0.6: A-ESR@0.6 counts scores above it"),
        (0.7, "tau", "tau 0.7: A-ESR@0.7 counts scores above it"),
        (0.75, "copy", "0.75: SSCD's authors call a score above it a copy")]
    assert r.row_label(0.81, [0.6, 0.7]) == "best score 0.810: above tau 0.6, tau 0.7, the copy line"
    assert r.row_label(0.65, [0.6, 0.7]) == "best score 0.650: above tau 0.6"
    assert r.row_label(0.6, [0.6, 0.7]) == "best score 0.600: below every line (not recovered)"  # Eq. 2: >
    legend = " ".join(r.legend([0.6, 0.7]))
    assert "Red lines: the paper's thresholds tau (0.6, 0.7)" in legend and "Blue dashed line: 0.75" in legend


def test_the_verdict_is_in_the_json_and_drawn_on_the_image():
    training, extracted = _unit_rows(HAND)
    metrics = m.evaluate(training, extracted)
    report = build_report(metrics, "sscd")
    assert report["verdict"] == ("2 of 3 training images recovered above tau = 0.6 (likely copies), 1 above SSCD's "
                                 "copy line 0.75; AS 0.600. The extracted images hold evidence that the fine-tune "
                                 "leaks its training images.")
    assert build_report(metrics, "sscd", verdict="said by the demo")["verdict"] == "said by the demo"
    nothing = m.evaluate(*_unit_rows([[0.2, 0.1], [0.5, 0.3]]))
    assert r.headline(nothing).startswith("0 of 2 training images recovered above tau = 0.6")
    assert "no evidence of leakage" in r.headline(nothing)

    images = [Image.new("RGB", (64, 64), c) for c in [(255, 0, 0), (0, 255, 0), (0, 0, 255)]]
    raw = metrics["raw"]
    plain = render_report(images, images, raw["best_match"], raw["best_score"], metrics["taus"])
    told = render_report(images, images, raw["best_match"], raw["best_score"], metrics["taus"], report["verdict"])
    grown = told.height - plain.height
    assert grown >= 2 * 16  # the sentence wraps onto lines of its own above the rows
    assert told.crop((0, 0, told.width, grown)).convert("L").getextrema()[0] < 100  # dark text on white
    below = 2 * r.PAD  # the rest (the sentence's last line may reach into the margin) is unchanged
    assert told.crop((0, grown + below, told.width, told.height)).tobytes() == \
        plain.crop((0, below, plain.width, plain.height)).tobytes()


def test_the_lines_are_drawn_where_their_scores_are():
    """Above the rows, each τ line is red and the copy line blue, at their score's x."""
    images = [Image.new("RGB", (64, 64), (0, 0, 0))]
    image = render_report(images, images, [0], [0.1], [0.6, 0.7])
    x_bar = 2 * r.THUMB + 4 * r.PAD

    def column(score):
        x = x_bar + int(score * (r.BAR - 1))
        return {image.getpixel((x, y)) for y in range(image.height)}
    assert r.TAU_COLOUR in column(0.6) and r.TAU_COLOUR in column(0.7) and r.COPY_COLOUR in column(0.75)
    assert r.TAU_COLOUR not in column(0.65) and r.COPY_COLOUR not in column(0.65)
