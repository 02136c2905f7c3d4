"""The try-it page in headless Chromium: pick the voice, type, click Speak; the streamed result plays to its end and
is the direct API's audio for that seed. The screenshot is saved in the test's tmp dir (page_played.png)."""
from __future__ import annotations

import os

import numpy as np
import pytest

from cdp_pipe import Chromium, find_chromium
from server_helpers import API_KEY, LONG_TEXT, direct


@pytest.fixture(scope="module")
def chromium():
    if find_chromium() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium not found: .ci/run installs it (apt-get install -y chromium)")
        pytest.skip("chromium not installed (apt-get install -y chromium); CI installs it and runs this test")
    with Chromium(timeout=60) as browser:
        yield browser


def test_page_plays_a_streamed_result(server, cosyvoice, chromium, tmp_path):
    seed = 21
    expected = direct(cosyvoice, "demo", LONG_TEXT, stream=True, seed=seed)
    page = chromium.new_page(server + "/")
    page.wait_for("!document.getElementById('keybox').hidden")  # the server wants a key: the page asks for it
    page.evaluate(f"document.getElementById('key').value = {API_KEY!r}; loadVoices()", await_promise=True)
    page.wait_for("document.getElementById('voice').options.length > 0")
    options = page.evaluate("[...document.getElementById('voice').options].map(o => o.textContent)")
    assert "demo (sft)" in options
    page.evaluate("document.getElementById('voice').value = 'demo'")
    page.evaluate(f"document.getElementById('text').value = {LONG_TEXT!r};"
                  f"document.getElementById('seed').value = '{seed}';")
    assert page.evaluate("document.getElementById('stream').checked") is True
    page.click("#play")  # a real click: the page may start audio only after a user gesture
    page.wait_for("document.body.dataset.state === 'playing'", timeout=60)
    try:
        page.wait_for("['played', 'error'].includes(document.body.dataset.state)", timeout=60)
    finally:
        page.screenshot(tmp_path / "page_played.png")
    status = page.evaluate("document.getElementById('status').textContent")
    assert page.evaluate("document.body.dataset.state") == "played", status
    result = page.evaluate("window.lastResult")
    assert result["stream"] is True and result["samples"] == len(expected)
    assert result["sum"] == int(expected.astype(np.int64).sum())
    assert result["head"] == expected[:16].tolist()
    assert 0 < result["firstByteMs"] <= result["totalMs"]
    assert f"Played {len(expected) / 24000:.2f} s of audio (streamed)" in status
    assert (tmp_path / "page_played.png").stat().st_size > 10_000
    # the replay/download link holds the same audio as a wav
    assert page.evaluate("document.getElementById('download').hidden") is False
