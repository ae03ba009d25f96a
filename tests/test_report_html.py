"""The HTML report of a real repaired conversion, rendered by a real headless browser (Debian's chromium,
installed by `make browser`): the screenshot must show the verdict, the divergence plot with its first
diverging layer where the report says, and the photos; the page must need nothing but itself."""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from safeconvert.faults import inject
from safeconvert.html_report import render_html
from safeconvert.html_report.plot import LINE_COLOUR
from safeconvert.html_report.style import STATUS_COLOURS
from safeconvert.pipeline import ConvertRequest, run_convert

CHROMIUM = Path("/usr/bin/chromium")
WINDOW = (1280, 5200)
VERDICT_GREEN = "#1a7f37"


def run_cli(*args: str) -> int:
    """The real command line, in this process (the frameworks are already loaded)."""
    from safeconvert.cli import main

    with pytest.raises(SystemExit) as stopped:
        main([str(a) for a in args])
    return stopped.value.code


def screenshot(page: Path, out: Path, window: tuple[int, int] = WINDOW) -> np.ndarray:
    """Render a page in headless chromium with the network blocked; return the screenshot as RGB pixels."""
    from PIL import Image

    assert CHROMIUM.exists(), "chromium is missing: run `make browser` (make test does)"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={out.parent / 'chromium-profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
               f"--window-size={window[0]},{window[1]}", f"--screenshot={out}", page.resolve().as_uri()]
    subprocess.run(command, capture_output=True, timeout=120, check=True)
    return np.asarray(Image.open(out).convert("RGB")).astype(np.int16)


def colour_mask(pixels: np.ndarray, hex_colour: str, tolerance: int = 14) -> np.ndarray:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.int16)
    return np.all(np.abs(pixels - rgb) <= tolerance, axis=2)


def reddish(pixels: np.ndarray) -> np.ndarray:
    """The marker's red (FIRST_COLOUR), also where anti-aliasing blends a thin line with the white plot."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return (r > 180) & (r - g > 60) & (r - b > 60) & (np.abs(g - b) < 40)


def plot_region(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """Bounding box (top, bottom, left, right) of the largest vertical run of rows holding the line colour
    (the legend swatch below the plot is a separate, short run)."""
    rows = np.flatnonzero(colour_mask(pixels, LINE_COLOUR).sum(axis=1) > 0)
    assert rows.size, "the plot's line colour is nowhere on the screenshot"
    runs = np.split(rows, np.flatnonzero(np.diff(rows) > 12) + 1)
    run = max(runs, key=lambda r: r[-1] - r[0])
    cols = np.flatnonzero(colour_mask(pixels[run[0]:run[-1] + 1], LINE_COLOUR).sum(axis=0) > 0)
    return int(run[0]), int(run[-1]), int(cols[0]), int(cols[-1])


def assert_page_looks_right(pixels: np.ndarray, report: dict, verdict_colour: str = VERDICT_GREEN) -> None:
    """What a reader must see: a full page, the verdict on top, the plot with its marker, photos."""
    assert pixels.std() > 20, "the screenshot is (nearly) blank"
    banner_rows = np.flatnonzero(colour_mask(pixels, verdict_colour).mean(axis=1) > 0.5)
    assert banner_rows.size > 30 and banner_rows[0] < 250, "no verdict banner at the top of the page"
    top, bottom, left, right = plot_region(pixels)
    assert bottom - top > 120 and right - left > 0.5 * pixels.shape[1], (top, bottom, left, right)
    assert top > banner_rows[-1], "the plot should come after the verdict"
    red = reddish(pixels[top:bottom + 1, left:right + 1]).sum(axis=0)
    marker = left + int(np.argmax(red))
    assert red.max() > 0.3 * (bottom - top), "no first-divergence marker line in the plot"
    divergence = report["divergence"]
    expected = left + (right - left) * divergence["first_divergent"] / (len(divergence["layers"]) - 1)
    assert abs(marker - expected) <= 0.02 * (right - left) + 4, (marker, expected)
    below = pixels[bottom + 60:]
    assert len(np.unique(below.reshape(-1, 3), axis=0)) > 3000, "no photographs below the plot"


def assert_self_contained(page: str) -> None:
    assert "<script" not in page.lower() and "<link" not in page.lower() and "@import" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/jpeg;base64,") for s in sources)
    assert not re.findall(r"(?:href|src)=\"https?:", page) and "url(http" not in page


@pytest.fixture(scope="module")
def repaired(small_keras_file: Path, tmp_path_factory) -> dict:
    """A real conversion (Keras -> ONNX by tf2onnx) with a planted fault (a ReLU removed: every label changes),
    repaired by the CLI with --html."""
    work = tmp_path_factory.mktemp("html")
    clean = work / "small.onnx"
    assert run_convert(ConvertRequest(small_keras_file, clean)).report.verified
    faulty = work / "removed_activation.onnx"
    inject(clean, faulty, "removed_activation", seed=0)
    page, report = work / "page.html", work / "report.json"
    code = run_cli("repair", small_keras_file, faulty, "-o", work / "fixed.onnx", "--report", report, "--html", page,
                   "--quiet")
    assert code == 0
    return {"work": work, "page": page, "report": json.loads(report.read_text()), "report_path": report}


def test_report_records_what_the_page_needs(repaired):
    report = repaired["report"]
    before = report["metrics_before_repair"]
    assert before["disagreements"] and before["output_size"] == 10
    for row in before["disagreements"]:
        assert Path(row["image_path"]).is_file() and Path(row["image_path"]).name == row["image"]
        assert row["image_index"] >= 0 and len(row["source_top5"]) == len(row["target_top5"]) == 5
    assert report["divergence"]["layers"] and report["divergence"]["first_divergent"] is not None


def test_page_is_self_contained_and_rerenders_the_same(repaired):
    page = repaired["page"].read_text()
    assert_self_contained(page)
    again = repaired["work"] / "again.html"
    assert run_cli("report", repaired["report_path"], "-o", again) == 0
    assert again.read_text() == page


def test_page_content(repaired):
    from PIL import Image

    page, report = repaired["page"].read_text(), repaired["report"]
    top = report["findings"][0]
    assert "REPAIRED &amp; VERIFIED" in page and f"{top['category']} {top['title']}: " in page
    assert report["findings"][0]["summary"].split(":")[0] in page
    cards = page.count('class="card"')
    assert cards == min(len(report["metrics_before_repair"]["disagreements"]), 24)
    assert "tench" not in page, "a 10-class model's labels are not ImageNet classes"
    first = re.search(r'src="data:image/jpeg;base64,([^"]+)"', page).group(1)
    assert Image.open(io.BytesIO(base64.b64decode(first))).size == (192, 192)
    for tool in (hop["converter"] for hop in report["route"]):
        assert tool in page


def test_page_renders_in_a_real_browser(repaired):
    shot = repaired["work"] / "page.png"
    pixels = screenshot(repaired["page"], shot)
    assert_page_looks_right(pixels, repaired["report"])
    assert colour_mask(pixels, STATUS_COLOURS["applied"]).sum() > 200  # the "applied" repair chip


def test_page_without_divergence_says_why(repaired, tmp_path: Path):
    report = dict(repaired["report"], divergence=None)
    page = render_html(report)
    assert "Not measured" in page and "<svg" not in page


def test_failed_run_still_writes_a_page(small_keras_file: Path, tmp_path: Path):
    page = tmp_path / "failed.html"
    code = run_cli("check", small_keras_file, small_keras_file, "--calib", tmp_path / "missing", "--html", page)
    assert code == 2
    text = page.read_text()
    assert "FAILED" in text and "calibration set not found" in text


def test_html_path_in_a_missing_directory_is_refused_before_the_run(small_keras_file: Path, tmp_path: Path):
    code = run_cli("check", small_keras_file, small_keras_file, "--html", tmp_path / "nowhere" / "p.html")
    assert code == 2 and not (tmp_path / "nowhere").exists()


@pytest.mark.slow
def test_real_mobilenet_pages(mobilenet_files: dict[str, Path], tmp_path: Path):
    """The real MobileNetV2 with a shifted pad: `repair --html` (repaired, verified, ImageNet names on the
    photos, the per-layer divergence plot) and `localize --html` (not verified, the per-layer divergence plot of the full model)."""
    clean = tmp_path / "mv2.onnx"
    assert run_convert(ConvertRequest(mobilenet_files["keras"], clean, preprocess="torch")).report.verified
    faulty = tmp_path / "pads.onnx"
    inject(clean, faulty, "pads_shifted", seed=0)
    page, report_path = tmp_path / "mv2.html", tmp_path / "mv2.json"
    assert run_cli("repair", mobilenet_files["keras"], faulty, "-o", tmp_path / "fixed.onnx", "--preprocess", "torch",
                   "--report", report_path, "--html", page, "--quiet") == 0
    report, text = json.loads(report_path.read_text()), page.read_text()
    assert_self_contained(text)
    assert "REPAIRED &amp; VERIFIED" in text and text.count('class="card"') == len(
        report["metrics_before_repair"]["disagreements"][:24])
    from safeconvert.summary import class_names

    label = report["metrics_before_repair"]["disagreements"][0]["source_label"]
    assert class_names()[label].split(",")[0] in text, "ImageNet labels are named for a 1000-class model"
    assert len(report["divergence"]["layers"]) > 50, "--html traces the divergence even when a static repair suffices"
    assert_page_looks_right(screenshot(page, tmp_path / "mv2.png"), report)

    located_page, located_path = tmp_path / "located.html", tmp_path / "located.json"
    assert run_cli("localize", mobilenet_files["keras"], faulty, "--preprocess", "torch", "--report", located_path,
                   "--html", located_page, "--quiet") == 1
    located = json.loads(located_path.read_text())
    assert len(located["divergence"]["layers"]) > 50 and located["divergence"]["first_divergent"] is not None
    assert_page_looks_right(screenshot(located_page, tmp_path / "located.png"), located, verdict_colour="#cf222e")
