"""tools/download_pretrained.py and the required-files check: offline it fails fast and clearly, never hangs."""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from cosyvoice.utils.pretrained import REQUIRED_FILES, PretrainedDirError, check_pretrained_dir, main as check_main
from stage_test_utils import load_tool

dl = load_tool("download_pretrained")


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch):
    """The probes below target local addresses; a proxy from the environment would redirect them."""
    for var in ("HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)


def _fill(d: Path, skip=()):
    for rel in REQUIRED_FILES:
        if rel not in skip:
            (d / rel).parent.mkdir(parents=True, exist_ok=True)
            (d / rel).write_bytes(b"x")


def test_check_names_every_missing_file(tmp_path):
    _fill(tmp_path, skip=("campplus.onnx", "CosyVoice-BlankEN/merges.txt"))
    with pytest.raises(PretrainedDirError) as e:
        check_pretrained_dir(str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg
    assert "missing 2 file(s): campplus.onnx, CosyVoice-BlankEN/merges.txt;" in msg
    assert "tools/make_tiny_pretrained.py" in msg and "tools/download_pretrained.py" in msg


def test_check_passes_on_complete_dir_and_cli_status(tmp_path, capsys):
    _fill(tmp_path)
    assert check_pretrained_dir(str(tmp_path)) == str(tmp_path)
    assert check_main([str(tmp_path)]) == 0
    (tmp_path / "hift.pt").unlink()
    assert check_main([str(tmp_path)]) == 2
    assert "missing 1 file(s): hift.pt;" in capsys.readouterr().err
    assert check_main([str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_hub_fails_fast_with_one_line(tmp_path):
    backends = [dl.Backend("json", "x/y", "127.0.0.1", "raise SystemExit(0)", port=_closed_port()),
                dl.Backend("json", "x/y", "no-such-host.invalid", "raise SystemExit(0)")]
    start = time.monotonic()
    with pytest.raises(RuntimeError) as e:
        dl.download(str(tmp_path / "m"), backends, connect_timeout=3, stall_timeout=3, timeout=10)
    assert time.monotonic() - start < 8
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.count("cannot reach") == 2 and "127.0.0.1" in msg and "no-such-host.invalid" in msg
    assert not (tmp_path / "m").exists()  # nothing created when no hub answered


def test_no_backend_installed_says_how_to_install(tmp_path):
    with pytest.raises(RuntimeError, match=r"none of no_such_module_a is installed \(pip install modelscope"):
        dl.download(str(tmp_path), [dl.Backend("no_such_module_a", "x/y", "h", "")], 1, 1, 1)


def test_server_that_never_answers_is_cut_off_by_the_stall_watchdog(tmp_path):
    """A hub that accepts connections but never sends (huggingface_hub would hang) is abandoned after stall_timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(server.accept()), daemon=True).start()
    hang = ("import socket, sys\n"
            f"s = socket.create_connection(('127.0.0.1', {port}))\n"
            "s.recv(1)\n")  # blocks forever: the server never writes
    start = time.monotonic()
    with pytest.raises(RuntimeError) as e:
        dl.download(str(tmp_path / "m"), [dl.Backend("json", "x/y", "127.0.0.1", hang, port=port)],
                    connect_timeout=3, stall_timeout=2, timeout=30)
    assert time.monotonic() - start < 10
    assert "json: download of x/y no bytes arrived for 2 s" in str(e.value)
    server.close()


def test_completed_download_is_checked(tmp_path):
    """A child that exits 0 but leaves files out is reported with the missing names."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    write_some = ("import pathlib, sys\n"
                  "d = pathlib.Path(sys.argv[2])\n"
                  "(d / 'llm.pt').write_bytes(b'x')\n")
    with pytest.raises(RuntimeError, match=r"json: downloaded, but pretrained model dir .* is missing 9 file\(s\)"):
        dl.download(str(tmp_path / "m"), [dl.Backend("json", "x/y", "127.0.0.1", write_some,
                                                     port=server.getsockname()[1])], 3, 5, 30)
    server.close()


def test_cli_offline_exits_1_within_seconds(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "default_backends",
                        lambda version: [dl.Backend("json", "x/y", "no-such-host.invalid", "raise SystemExit(0)")])
    start = time.monotonic()
    assert dl.main(["--model_dir", str(tmp_path / "m"), "--connect_timeout", "3"]) == 2
    assert time.monotonic() - start < 8


def test_probe_goes_through_an_https_proxy(monkeypatch):
    b = dl.Backend("json", "x/y", "huggingface.co", "")
    assert dl.probe_target(b) == ("huggingface.co", 443)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert dl.probe_target(b) == ("proxy.example", 3128)
    monkeypatch.setenv("NO_PROXY", "localhost,.huggingface.co")
    assert dl.probe_target(b) == ("huggingface.co", 443)


def test_version_picks_the_hub_ids(tmp_path, monkeypatch):
    """--version (or the dir's name) chooses the model: its ModelScope / Hugging Face ids and the files checked."""
    from cosyvoice.utils.pretrained import COSYVOICE3

    ids = [(b.name, b.repo) for b in dl.default_backends(COSYVOICE3)]
    assert ids == [("modelscope", "FunAudioLLM/Fun-CosyVoice3-0.5B-2512"),
                   ("huggingface_hub", "FunAudioLLM/Fun-CosyVoice3-0.5B-2512")]
    assert [b.repo for b in dl.default_backends()] == ["iic/CosyVoice2-0.5B", "FunAudioLLM/CosyVoice2-0.5B"]
    asked = []
    monkeypatch.setattr(dl, "default_backends", lambda version: asked.append(version.name) or [
        dl.Backend("json", "x/y", "no-such-host.invalid", "raise SystemExit(0)")])
    assert dl.main(["--model_dir", str(tmp_path / "Fun-CosyVoice3-0.5B"), "--connect_timeout", "1"]) == 2
    assert dl.main(["--model_dir", str(tmp_path / "m"), "--version", "cosyvoice3", "--connect_timeout", "1"]) == 2
    assert dl.main(["--model_dir", str(tmp_path / "m"), "--connect_timeout", "1"]) == 2
    assert asked == ["cosyvoice3", "cosyvoice3", "cosyvoice2"]
