"""Shared pytest fixtures: where the golden CosyVoice2/3 data lives (tests/data), and a tiny Qwen2 pretrain dir."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
FIXTURES = DATA / "cosyvoice2"
FIXTURES3 = DATA / "cosyvoice3"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not (FIXTURES / "README.md").is_file():
        pytest.fail(f"golden fixtures not found at {FIXTURES} (tests/data is part of the repository: restore it)")
    return FIXTURES


@pytest.fixture(scope="session")
def fixtures3_dir() -> Path:
    if not (FIXTURES3 / "README.md").is_file():
        pytest.fail(f"golden fixtures not found at {FIXTURES3} (tests/data is part of the repository: restore it)")
    return FIXTURES3


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory, fixtures_dir) -> Path:
    """A qwen_pretrain_path dir holding only config.json (the tiny fixture config)."""
    d = tmp_path_factory.mktemp("tiny_qwen")
    shutil.copy(fixtures_dir / "tiny_qwen2_config.json", d / "config.json")
    return d


@pytest.fixture(scope="session")
def tiny3_qwen_dir(tmp_path_factory, fixtures3_dir) -> Path:
    """A qwen_pretrain_path dir holding only config.json: the tiny CosyVoice3 backbone (tiny3_qwen2_config.json)."""
    d = tmp_path_factory.mktemp("tiny3_qwen")
    shutil.copy(fixtures3_dir / "tiny3_qwen2_config.json", d / "config.json")
    return d


@pytest.fixture(scope="session")
def full_qwen_dir(tmp_path_factory) -> Path:
    """A qwen_pretrain_path dir with the Qwen2.5-0.5B / CosyVoice-BlankEN config (no weights)."""
    d = tmp_path_factory.mktemp("full_qwen")
    shutil.copy(ROOT / "conf" / "qwen2_0.5b_config.json", d / "config.json")
    return d


def load_tool(name: str):
    """tools/<name>.py as a module (the tools are scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"tool_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def state_layout(module) -> list:
    """[(name, shape list, dtype name)] of a module's state_dict, in order (the manifests' layout)."""
    return [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()]


@pytest.fixture(scope="session")
def full_size_module():
    """build(conf, key, manifest_path) -> (module, manifest entry): ``key`` of the full-size yaml ``conf`` built
    on the meta device, checked to draw no random numbers and to have exactly the manifest's state_dict layout."""
    import random

    import torch

    from cosyvoice.utils.config import load_config

    def build(conf, key: str, manifest_path):
        torch_state, py_state = torch.random.get_rng_state(), random.getstate()
        with torch.device("meta"):
            module = load_config(str(conf), keys=[key])[key]
        assert torch.equal(torch.random.get_rng_state(), torch_state) and random.getstate() == py_state
        manifest = json.loads(Path(manifest_path).read_text())["modules"][key]
        assert state_layout(module) == [(e["name"], e["shape"], e["dtype"]) for e in manifest["state_dict"]]
        return module, manifest
    return build


@pytest.fixture(scope="session")
def make_tiny_pretrained():
    """tools/make_tiny_pretrained.py as a module."""
    return load_tool("make_tiny_pretrained")


@pytest.fixture(scope="session")
def bench_tool():
    """tools/benchmark.py as a module."""
    return load_tool("benchmark")


@pytest.fixture(scope="session")
def stand_in_dir(tmp_path_factory, make_tiny_pretrained) -> Path:
    """The tiny stand-in CosyVoice2-0.5B dir, written once per session by tools/make_tiny_pretrained.py (seed 1986)."""
    out = tmp_path_factory.mktemp("pretrained") / "CosyVoice2-0.5B-tiny"
    make_tiny_pretrained.make_stand_in(out, 1986)
    return out


@pytest.fixture(scope="session")
def stand_in3_dir(tmp_path_factory, make_tiny_pretrained) -> Path:
    """The tiny stand-in Fun-CosyVoice3-0.5B dir (tools/make_tiny_pretrained.py --version cosyvoice3, seed 1986),
    written once per session."""
    out = tmp_path_factory.mktemp("pretrained3") / "CosyVoice3-0.5B-tiny"
    make_tiny_pretrained.make_stand_in(out, 1986, "cosyvoice3")
    return out


def _random_adapter(stand_in_dir, settings, seed):
    """An llm adapter of ``settings`` for the stand-in's llm with random (non-zero) A and B, as a state_dict."""
    import torch

    from cosyvoice.utils import lora
    from cosyvoice.utils.common import load_checkpoint_strict
    from cosyvoice.utils.config import load_config

    cfg = load_config(str(stand_in_dir / "cosyvoice2.yaml"),
                      {"qwen_pretrain_path": str(stand_in_dir / "CosyVoice-BlankEN")}, keys=["llm"])
    llm = cfg["llm"]
    load_checkpoint_strict(llm, stand_in_dir / "llm.pt")
    lora.add_adapter(llm, settings, trainable=False)
    g = torch.Generator().manual_seed(seed)
    state = lora.adapter_state_dict(llm)
    return {k: 0.3 * torch.randn(v.shape, generator=g) for k, v in state.items()}


@pytest.fixture(scope="session")
def stand_in_characters(tmp_path_factory, stand_in_dir) -> Path:
    """A folder of two characters made for the stand-in (read-only for the tests): alice (llm adapter, base flow)
    and bob (another adapter, its own flow, a speaker tag)."""
    import torch

    from cosyvoice.cli.character import write_character
    from cosyvoice.utils import lora

    root = tmp_path_factory.mktemp("characters")
    files = root / "files"
    files.mkdir()
    a_set = lora.LoraSettings(("q_proj", "v_proj", "llm_decoder"), r=4, alpha=8.0, dropout=0.0)
    b_set = lora.LoraSettings(("k_proj", "o_proj", "up_proj", "speech_embedding"), r=2, alpha=4.0, dropout=0.0)
    torch.save(_random_adapter(stand_in_dir, a_set, 1), files / "a.pt")
    torch.save(_random_adapter(stand_in_dir, b_set, 2), files / "b.pt")
    flow = torch.load(stand_in_dir / "flow.pt", weights_only=True)
    g = torch.Generator().manual_seed(3)
    torch.save({k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                for k, v in flow.items()}, files / "flow.pt")
    g = torch.Generator().manual_seed(4)
    out = root / "characters"
    write_character(str(out / "alice"), "alice", str(stand_in_dir), {"embedding": torch.randn(1, 192, generator=g)},
                    llm_adapter=str(files / "a.pt"), llm_lora=a_set.to_dict())
    write_character(str(out / "bob"), "bob", str(stand_in_dir),
                    {"embedding": torch.randn(1, 192, generator=g), "speaker_tag": "bob<|endofprompt|>"},
                    llm_adapter=str(files / "b.pt"), llm_lora=b_set.to_dict(), flow_file=str(files / "flow.pt"),
                    flow_kind="full")
    return out


@pytest.fixture(scope="session")
def tiny_flow(fixtures_dir):
    """The tiny flow of fixtures/cosyvoice2/tiny.yaml with its golden flow.pt loaded (strict), in eval mode."""
    from cosyvoice.utils.common import load_checkpoint_strict
    from cosyvoice.utils.config import load_config

    flow = load_config(str(fixtures_dir / "tiny.yaml"), keys=["flow"])["flow"]
    load_checkpoint_strict(flow, fixtures_dir / "flow.pt")
    return flow.eval()


@pytest.fixture(scope="session")
def load_io(fixtures_dir):
    """load_io(name): the tensors of fixtures/cosyvoice2/<name>.safetensors."""
    from safetensors.torch import load_file

    def load(name: str):
        return load_file(fixtures_dir / f"{name}.safetensors")
    return load


@pytest.fixture(scope="session")
def load_io3(fixtures3_dir):
    """load_io3(name): the tensors of tests/data/cosyvoice3/<name>.safetensors."""
    from safetensors.torch import load_file

    def load(name: str):
        return load_file(fixtures3_dir / f"{name}.safetensors")
    return load


@pytest.fixture(scope="session")
def fixture3_meta(fixtures3_dir):
    """fixture3_meta(name): the header metadata (seeds, call settings) of tests/data/cosyvoice3/<name>.safetensors."""
    from safetensors import safe_open

    def meta(name: str):
        with safe_open(str(fixtures3_dir / f"{name}.safetensors"), "pt") as f:
            return f.metadata()
    return meta


@pytest.fixture(scope="session")
def tiny3_flow(fixtures3_dir):
    """The tiny CosyVoice3 flow of tests/data/cosyvoice3/tiny3.yaml with its golden flow.pt loaded (strict), in eval
    mode."""
    from cosyvoice.utils.common import load_checkpoint_strict
    from cosyvoice.utils.config import load_config

    flow = load_config(str(fixtures3_dir / "tiny3.yaml"), keys=["flow"])["flow"]
    load_checkpoint_strict(flow, fixtures3_dir / "flow.pt")
    return flow.eval()
