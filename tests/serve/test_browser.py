"""The page in a real browser (headless Chromium driven by Playwright) against `unetkit serve` in its own process:
upload an image with its ground truth, wait for the overlay, read the metrics, download the mask and compare it
byte for byte with `unetkit predict`'s file; zoom into a large image through the tile pyramid; refusals shown
in the CLI's words; the runs view. `test_screenshots` writes each view's picture to `$UNETKIT_SCREENSHOTS` (the
README's, docs/images/) or to the test's folder, from the runs in `$UNETKIT_SCREENSHOT_RUNS` or the test's own.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from unetkit.cli.main import main

BACKGROUND = (32, 36, 42)  # the canvas' backdrop (#20242a)
GREEN, RED, BLUE = (0, 200, 0), (230, 30, 30), (40, 90, 255)  # foreground / false positive / false negative

COUNT_COLOURS = """(colours) => {
  const canvas = document.getElementById("view");
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const counts = colours.map(() => 0);
  let image = 0;
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    if (r === 32 && g === 36 && b === 42) continue;
    image++;
    colours.forEach(([cr, cg, cb], k) => { if (r === cr && g === cg && b === cb) counts[k]++; });
  }
  return { image, counts };
}"""


def _page(browser: Any, url: str, width: int = 1400, height: int = 900) -> Any:
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    page = context.new_page()
    page.errors = []  # uncaught exceptions of the page's script
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.goto(url)
    page.wait_for_selector("body[data-loaded='1']", timeout=30_000)
    return page


def _wait_job(page: Any, status: str = "done") -> Any:
    job = page.wait_for_selector(f".job[data-status='{status}']", timeout=120_000)
    if status == "done":
        page.wait_for_selector(f"#view[data-ready='1'][data-job='{job.get_attribute('data-id')}']", timeout=30_000)
    return job


def _until(page: Any, expression: str, timeout: float = 120) -> None:
    """Wait until a JavaScript expression is true (polled here: the page's CSP forbids the eval that
    Playwright's `wait_for_function` runs inside the page)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(f"() => Boolean({expression})"):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)


def _redrawn(page: Any, *actions: Any) -> None:
    """Do `actions` (which change the view), then wait until the canvas was drawn again with every tile."""
    before = int(page.get_attribute("#view", "data-frame") or 0)
    for action in actions:
        action()
    canvas = "document.getElementById('view').dataset"
    _until(page, f"Number({canvas}.frame) > {before} && {canvas}.ready === '1'", timeout=30)


def _opacity(page: Any, value: str) -> Any:
    return lambda: (page.fill("#opacity", value), page.dispatch_event("#opacity", "input"))


def _fractions(page: Any, colours: list[tuple[int, int, int]]) -> list[float]:
    counted = page.evaluate(COUNT_COLOURS, [list(c) for c in colours])
    assert counted["image"] > 10_000  # the image fills a good part of the canvas
    return [n / counted["image"] for n in counted["counts"]]


def test_prediction_with_ground_truth_in_the_browser(browser, serve_process, runs_root, cells, tmp_path):
    image = cells / "images" / "cells_0050.png"
    assert main(["predict", str(runs_root / "narrow"), str(image), "--out", str(tmp_path / "cli")]) == 0
    cli_mask = tmp_path / "cli" / "cells_0050.png"
    # ground truth with errors of both kinds by construction: the prediction, less a band, plus a square
    pred = np.asarray(Image.open(cli_mask)) > 0
    target = pred.copy()
    target[40:56] = False
    target[4:20, 70:86] = True
    assert (pred & ~target).mean() > 0.01 and (~pred & target).mean() > 0.01
    truth = tmp_path / "truth" / "cells_0050.png"
    truth.parent.mkdir()
    Image.fromarray(target.astype(np.uint8) * 255).save(truth)

    served = serve_process(runs_root)
    page = _page(browser, served.url)
    page.select_option("#run-select", "narrow")
    page.set_input_files("#gt-input", str(truth))
    page.set_input_files("#file-input", str(image))
    job = _wait_job(page)
    assert job.query_selector(".name").inner_text() == "cells_0050.png + cells_0050.png"

    # the mask, downloaded from the page, is the file `unetkit predict` writes
    with page.expect_download() as download:
        page.click("#download-mask")
    assert download.value.suggested_filename == "cells_0050.png"
    got = tmp_path / "page" / "cells_0050.png"
    download.value.save_as(got)
    assert got.read_bytes() == cli_mask.read_bytes()

    # the metrics table is `unetkit evaluate`'s row, to the 4 decimals shown
    assert main(["evaluate", str(got), str(truth), "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())["images"][0]
    for key in ("accuracy", "sensitivity", "specificity", "dice", "iou", "mcc", "rand_error"):
        assert page.inner_text(f"#metrics td[data-key='{key}']") == f"{scores[key]:.4f}", key
    assert page.inner_text("#metrics td[data-key='pixels']") == "9216"

    # the error overlay (opened first with ground truth): its colours cover the pixels they should
    expected = [(pred & target).mean(), (pred & ~target).mean(), (~pred & target).mean()]
    _redrawn(page, _opacity(page, "1"))
    assert page.is_checked("input[value=errors]")
    shown = _fractions(page, [GREEN, RED, BLUE])
    assert np.allclose(shown, expected, atol=0.02), (shown, expected)

    # the mask overlay in the class colour, at full opacity over exactly the predicted foreground
    _redrawn(page, lambda: page.check("input[value=mask]"))
    (green,) = _fractions(page, [GREEN])
    assert abs(green - pred.mean()) < 0.02, (green, pred.mean())
    _redrawn(page, lambda: page.check("input[value=none]"))
    assert _fractions(page, [GREEN]) == [0.0]
    assert page.errors == []


def test_large_image_zooms_through_the_tile_pyramid(browser, serve_process, runs_root, tmp_path):
    """2100 x 1400: the page opens on the downscaled level and fetches full-size tiles only where it zooms."""
    rng = np.random.default_rng(0)
    big = tmp_path / "big.png"
    blobs = np.kron(rng.random((30, 45)), np.ones((50, 50)))[:1400, :2100]
    Image.fromarray((blobs * 200 + rng.random((1400, 2100)) * 40).astype(np.uint8)).save(big)
    served = serve_process(runs_root, "--instances", "components")
    page = _page(browser, served.url)
    tiles: list[str] = []
    page.on("request", lambda request: tiles.append(request.url) if "/tiles/" in request.url else None)
    polled: list[dict[str, Any]] = []
    page.on("response", lambda r: polled.append(r.json()) if re.search(r"/api/jobs/\w+$", r.url) else None)
    page.set_input_files("#file-input", str(big))
    _wait_job(page)
    # the progress bar followed the tiles: 6 x 4 tiles of 512 px overlapping by a quarter
    progress = [(j["done"], j["total"]) for j in polled if j["status"] == "predicting" and j["total"]]
    assert progress and all(total == 24 and 0 < done <= 24 for done, total in progress), progress
    # levels 2100, 1050 and 525 px wide: the whole image on a ~1000 px canvas is drawn from level 1
    assert page.get_attribute("#view", "data-level") == "1"
    assert tiles and all(re.search(r"/tiles/\w+/1/", t) for t in tiles)
    assert page.is_enabled("#outlines") and page.is_checked("#outlines")
    for _ in range(3):
        page.click("#zoom-in")
    page.wait_for_selector("#view[data-ready='1'][data-level='0']", timeout=30_000)
    requested = [re.search(r"/tiles/(\w+)/(\d+)/(\d+)/(\d+)", t).groups() for t in tiles]  # type: ignore[union-attr]
    image_tiles = {(ty, tx) for layer, level, ty, tx in requested if layer == "image" and level == "0"}
    assert 0 < len(image_tiles) < 6 * 9  # only the visible part of the 6 x 9 full-size tiles
    assert page.errors == []


def test_refusals_are_shown_in_the_cli_words(browser, serve_process, runs_root, tmp_path, capsys, monkeypatch):
    notes = tmp_path / "notes.png"
    notes.write_text("not an image\n")
    large = tmp_path / "large.tif"
    large.write_bytes(b"II*\x00" + bytes(3000))
    monkeypatch.chdir(tmp_path)
    assert main(["predict", str(runs_root / "narrow"), "notes.png", "--out", str(tmp_path / "cli")]) == 2
    expected = capsys.readouterr().err.strip().splitlines()[-1].removeprefix("unetkit predict: error: ")
    served = serve_process(runs_root, "--max-upload-mb", "0.002")  # 2 KiB
    page = _page(browser, served.url)
    page.set_input_files("#file-input", str(notes))
    job = _wait_job(page, "error")
    assert job.query_selector(".status").inner_text() == expected
    page.set_input_files("#file-input", str(large))
    page.wait_for_selector(".job[data-status='error'] >> text=large.tif: 2.9 KiB is larger", timeout=30_000)
    statuses = [s.inner_text() for s in page.query_selector_all(".job .status")]
    assert statuses[0] == (
        "large.tif: 2.9 KiB is larger than the upload limit of 2.0 KiB (raise it with `unetkit serve --max-upload-mb`)"
    )
    assert page.errors == []


def test_a_folder_pair_and_the_runs_view(browser, serve_process, runs_root, cells):
    served = serve_process(runs_root)
    page = _page(browser, served.url, height=1000)
    page.set_input_files("#folder-input", str(cells))  # images/ and masks/: each image with its ground truth
    _until(page, "document.querySelectorAll('.job[data-status=done]').length === 2")
    names = sorted(n.inner_text() for n in page.query_selector_all(".job .name"))
    assert names == ["cells_0050.png + cells_0050.png", "cells_0051.png + cells_0051.png"]
    page.click(".job >> text=cells_0051.png")
    _redrawn(page, lambda: page.check("input[value=mask]"))
    assert page.inner_text("#metrics-command") == "(as unetkit evaluate cells_0051.png cells_0051.png)"
    page.click("#tab-runs")
    page.wait_for_selector("#charts .chart polyline")
    charts = page.query_selector_all("#charts .chart")
    assert [c.get_attribute("data-metric") for c in charts] == ["train_loss", "val_loss", "dice", "iou"]
    assert len(charts[0].query_selector_all("polyline")) == 2  # the two runs side by side
    assert len(charts[0].query_selector_all("circle")) == 3 + 2  # one point per epoch of each
    sample = page.query_selector(".sample[data-run='narrow']")
    slider = sample.query_selector("input[type=range]")
    slider.fill("0")
    assert sample.query_selector("img").get_attribute("src").endswith("/samples/epoch_001.png")
    assert sample.query_selector(".epoch").inner_text().strip() == "epoch 1 of 3"
    _until(page, "document.querySelector('.sample img').naturalWidth > 0")
    config = page.inner_text("#configs details pre")
    assert config.rstrip("\n") == (runs_root / "narrow" / "config.yaml").read_text().rstrip("\n")
    page.wait_for_selector("#diff-table td")
    rows = [r.inner_text().split("\t") for r in page.query_selector_all("#diff-table tr")[1:]]
    assert sorted(row[0] for row in rows) == ["epochs", "lr", "out"]
    assert ["lr", "0.01", "0.003"] in rows
    assert page.errors == []


def test_screenshots(browser, serve_process, runs_root, tmp_path):
    """The README's pictures of each view: a prediction over the image, the ground-truth comparison, the runs."""
    shots = Path(os.environ.get("UNETKIT_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    root = Path(os.environ.get("UNETKIT_SCREENSHOT_RUNS") or runs_root)
    data = tmp_path / "cells"
    assert main(["data", "synthetic", "cells", "--out", str(data), "-n", "2", "--size", "256", "--start", "300"]) == 0
    served = serve_process(root, "--instances")
    page = _page(browser, served.url, height=960)
    page.set_input_files("#file-input", str(data / "images" / "cells_0301.png"))
    _wait_job(page)
    _redrawn(page, _opacity(page, "0.45"))
    page.screenshot(path=str(shots / "serve-predict.png"))
    page.set_input_files("#gt-input", str(data / "masks" / "cells_0300.png"))
    page.set_input_files("#file-input", str(data / "images" / "cells_0300.png"))
    _until(page, "document.querySelectorAll('.job[data-status=done]').length === 2")
    page.click(".job >> text=cells_0300.png")
    _redrawn(page, lambda: page.check("input[value=errors]"), lambda: page.uncheck("#outlines"))
    page.screenshot(path=str(shots / "serve-compare.png"), full_page=True)
    page.click("#tab-runs")
    page.wait_for_selector("#charts .chart polyline")
    _until(page, "[...document.querySelectorAll('.sample img')].every((i) => i.naturalWidth > 0)")
    page.wait_for_selector("#diff-table td")
    page.screenshot(path=str(shots / "serve-runs.png"), full_page=True)
    for name in ("serve-predict", "serve-compare", "serve-runs"):
        with Image.open(shots / f"{name}.png") as picture:
            assert picture.width == 1400 and picture.height >= 960
    assert page.errors == []
