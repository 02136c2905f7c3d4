"""tools/parse_options.sh: the Kaldi option convention, exercised through a small script that sources it."""
from __future__ import annotations

import subprocess

import pytest

from recipe_helpers import ROOT

SCRIPT = """
stage=0
stop_stage=10
data_dir=data/default
use_gpu=true
name=""
help_message="Usage: demo.sh [options]
  --stage N   first stage"
. "{root}/tools/parse_options.sh"
echo "stage=$stage stop_stage=$stop_stage data_dir=$data_dir use_gpu=$use_gpu name=[$name] rest=[$*]"
"""


def run_script(tmp_path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "demo.sh"
    script.write_text(SCRIPT.format(root=ROOT))
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=30)


def test_defaults_kept_without_options(tmp_path):
    r = run_script(tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "stage=0 stop_stage=10 data_dir=data/default use_gpu=true name=[] rest=[]"


def test_options_override_defaults_in_every_spelling(tmp_path):
    r = run_script(tmp_path, "--stage", "-1", "--stop-stage", "3", "--data_dir=/x y", "--use-gpu", "false",
                   "--name", "", "pos1", "pos2")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "stage=-1 stop_stage=3 data_dir=/x y use_gpu=false name=[] rest=[pos1 pos2]"


def test_stop_stage_with_underscore_and_dash_are_the_same(tmp_path):
    a = run_script(tmp_path, "--stop_stage", "7")
    b = run_script(tmp_path, "--stop-stage", "7")
    assert a.stdout == b.stdout and "stop_stage=7" in a.stdout


def test_config_file_then_options(tmp_path):
    conf = tmp_path / "my.conf"
    conf.write_text("stage=4\ndata_dir=from/config\n")
    r = run_script(tmp_path, "--config", str(conf), "--stage", "5")
    assert r.returncode == 0, r.stderr
    assert "stage=5 " in r.stdout and "data_dir=from/config" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--no_such_option", "1"], "demo.sh: unknown option --no_such_option"),
        (["--PATH", "/tmp"], "demo.sh: unknown option --PATH"),
        (["--help_message", "x"], "demo.sh: unknown option --help_message"),
        (["--stage"], "demo.sh: option --stage needs a value"),
        (["--stage", "--stop_stage", "3"], "demo.sh: option --stage needs a value (got the option '--stop_stage')"),
        (["--use_gpu", "yes"], "demo.sh: option --use_gpu takes true or false, got 'yes'"),
        (["--config", "/no/such/file"], "demo.sh: config file not found: /no/such/file"),
    ],
)
def test_bad_options_fail_with_a_clear_message(tmp_path, args, message):
    r = run_script(tmp_path, *args)
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.splitlines()[0] == message


def test_help_prints_the_message_and_exits_0(tmp_path):
    r = run_script(tmp_path, "--stage", "3", "--help")
    assert r.returncode == 0
    assert r.stdout == ("Usage: demo.sh [options]\n  --stage N   first stage\n"  # then the options every script has
                        "  --config FILE             read option assignments (name=value lines) from FILE\n"
                        "  --help                    print this message\n")
