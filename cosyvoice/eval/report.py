"""The before/after report of an experiment: ``report.html`` + ``metrics.json`` (+ the PNG plots it shows).

``report.html`` opens from disk in a browser, without a server: the plots are embedded as base64 ``data:`` URIs
(and also saved under ``report_plots/``); the audio players point at wavs by relative path (``report_audio/...``,
next to the report), or, with ``embed_audio=True``, carry the wavs inline so the one file can be sent alone.

Training curves come from each training model dir (``<exp_dir>/llm``, ``<exp_dir>/flow``): the TensorBoard scalars
the trainer logs (``train/loss``, ``train/acc``, ``cv/loss``, ``cv/acc``, ...) under ``<dir>/tensorboard``, the CV
loss/acc of every checkpoint sidecar (``*.ckpt.json``) and the per-epoch evaluation (``eval/epoch_<N>.json``:
``sim``, ``error_rate``; see :mod:`cosyvoice.eval.select`). Whatever is missing is left out of the plots.
"""
from __future__ import annotations

import base64
import datetime
import html
import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from cosyvoice.eval.runner import SYSTEMS as SYSTEM_LABELS
from cosyvoice.eval.select import load_epoch_records
from cosyvoice.utils import checkpoint as ckpt
from cosyvoice.utils.checkpoint import atomic_write_text
from cosyvoice.utils.pretrained import class_name, get_version

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
METRICS_FILE = "metrics.json"
PLOTS_DIR = "report_plots"

# (summary key, label, which way is better: 'up', 'down', 'one' (closest to 1) or '')
METRIC_ROWS = (
    ("sim_centroid", "Speaker similarity to the speaker centroid (CAM++ cosine)", "up"),
    ("sim_real", "Speaker similarity to the real clip of the same text", "up"),
    ("cer", "CER, Chinese texts", "down"),
    ("wer", "WER, English texts", "down"),
    ("error_rate", "ASR error rate, all texts (CER/WER units pooled)", "down"),
    ("duration_ratio", "Duration ratio to the real clip", "one"),
    ("rtf", "Real-time factor (synthesis time / audio time)", "down"),
    ("utterances", "Utterances", ""),
    ("seconds", "Audio seconds", ""),
)


# ------------------------------------------------------------------------------------------------ training logs
def read_scalars(tb_dir: Path) -> Dict[str, List[Tuple[int, float]]]:
    """{tag: [(step, value)]} of the TensorBoard event files under ``tb_dir`` (the last value per step wins)."""
    if not tb_dir.is_dir() or not any(tb_dir.rglob("events.out.tfevents.*")):
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: Dict[str, Dict[int, float]] = {}
    for folder in sorted({p.parent for p in tb_dir.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            for event in acc.Scalars(tag):
                out.setdefault(tag, {})[int(event.step)] = float(event.value)
    return {tag: sorted(values.items()) for tag, values in out.items()}


def collect_training(train_dir) -> Optional[Dict]:
    """Curves of one training model dir, or None when it holds neither checkpoints nor TensorBoard logs."""

    d = Path(train_dir)
    if not d.is_dir():
        return None
    scalars = read_scalars(d / "tensorboard")
    records = load_epoch_records(d)
    if not scalars and not records:
        return None
    return {"name": d.name, "dir": str(d), "scalars": scalars, "records": records}


def training_facts(found: Dict) -> Dict:
    """How a training dir fine-tuned its model: mode and trainable parameters (finetune.json), the size of one
    checkpoint, the median seconds per update and the peak memory of the run (TensorBoard ``speed/*``)."""
    from statistics import median

    d = Path(found["dir"])
    facts: Dict = {"finetune": None, "trainable_parameters": None, "parameters": None, "checkpoint_mb": None,
                   "step_s": None, "peak_memory_mb": None}
    record = d / "finetune.json"
    if record.is_file():
        info = json.loads(record.read_text(encoding="utf-8"))
        facts.update({k: info.get(k) for k in ("finetune", "trainable_parameters", "parameters")})
    checkpoints = ckpt.list_checkpoints(d)
    if checkpoints and (d / checkpoints[-1].model_file).is_file():
        facts["checkpoint_mb"] = (d / checkpoints[-1].model_file).stat().st_size / 2 ** 20
        facts["finetune"] = facts["finetune"] or checkpoints[-1].finetune
    steps = [v for _, v in found["scalars"].get("speed/step_s", [])]
    memory = [v for _, v in found["scalars"].get("speed/peak_memory_mb", [])]
    facts["step_s"] = median(steps) if steps else None
    facts["peak_memory_mb"] = max(memory) if memory else None
    return facts


def _series(points: Sequence[Tuple[float, Optional[float]]]) -> Tuple[List[float], List[float]]:
    kept = [(x, y) for x, y in points if y is not None]
    return [x for x, _ in kept], [y for _, y in kept]


def plot_training(training: Dict, out_png: Path) -> bool:
    """Loss, accuracy and per-epoch evaluation panels of one training dir; False when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    sc, recs = training["scalars"], training["records"]
    whole = [r for r in recs if r["name"].endswith("_whole")]
    panels = []
    loss = [("train", _series(sc.get("train/loss", [])), "-"),
            ("CV (checkpoints)", _series([(r["step"], r["cv_loss"]) for r in recs]), "o-")]
    acc = [("train", _series(sc.get("train/acc", [])), "-"),
           ("CV (checkpoints)", _series([(r["step"], r["cv_acc"]) for r in recs]), "o-")]
    evals = [("SIM", _series([(r["epoch"], r["sim"]) for r in whole]), "o-"),
             ("ASR error rate", _series([(r["epoch"], r["error_rate"]) for r in whole]), "s--")]
    for title, xlabel, lines in (("loss", "step", loss), ("accuracy", "step", acc),
                                 ("per-epoch evaluation", "epoch", evals)):
        if any(xs for _, (xs, _), _ in lines):
            panels.append((title, xlabel, lines))
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, xlabel, lines) in zip(axes[0], panels):
        handles = []
        for i, (label, (xs, ys), style) in enumerate(lines):
            if not xs:
                continue
            # the evaluation panel: SIM on the left axis, the error rate on its own right axis
            target = ax.twinx() if title == "per-epoch evaluation" and i == 1 else ax
            handles += target.plot(xs, ys, style, label=label, markersize=4, color=f"C{i}")
            if target is not ax:
                target.set_ylabel(label, fontsize=8)
            elif title == "per-epoch evaluation":
                ax.set_ylabel(label, fontsize=8)
        ax.set_title(f"{training['name']}: {title}")
        ax.set_xlabel(xlabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(handles=handles, fontsize=8)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return True


def plot_summary(summary: Dict[str, Dict], out_png: Path) -> bool:
    """Grouped bars: SIM (centroid, same text) and ASR error rates of each system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = [k for k in ("sim_centroid", "sim_real", "cer", "wer")
            if any(s.get(k) is not None for s in summary.values())]
    if not keys:
        return False
    systems = [s for s in ("real", "base", "sft") if s in summary]
    x = np.arange(len(keys))
    width = 0.8 / len(systems)
    fig, ax = plt.subplots(figsize=(7.5, 3.9))
    for i, system in enumerate(systems):
        values = [summary[system].get(k) for k in keys]
        bars = ax.bar(x + (i - (len(systems) - 1) / 2) * width, [v if v is not None else 0.0 for v in values],
                      width, label=SYSTEM_LABELS.get(system, system))
        for bar, v in zip(bars, values):
            ax.annotate("n/a" if v is None else f"{v:.3f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels({"sim_centroid": "SIM centroid", "sim_real": "SIM same text", "cer": "CER (zh)",
                        "wer": "WER (en)"}[k] for k in keys)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_title("Base vs fine-tuned")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(systems), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------------ HTML
def _fmt(value, key: str = "") -> str:
    if value is None:
        return "n/a"
    if key in ("utterances",):
        return str(int(value))
    if key in ("cer", "wer", "error_rate", "rate"):
        return f"{100 * value:.1f}%"
    if key == "seconds":
        return f"{value:.1f}"
    return f"{value:.3f}"


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _better(key: str, way: str, a, b) -> Optional[str]:
    """'base' or 'sft' when one is better on this row."""
    if a is None or b is None or a == b or not way:
        return None
    if way == "up":
        return "sft" if b > a else "base"
    if way == "down":
        return "sft" if b < a else "base"
    return "sft" if abs(b - 1) < abs(a - 1) else "base"


def metrics_table(metrics: Dict) -> str:
    summary = metrics["summary"]
    systems = [s for s in ("real", "base", "sft") if s in summary]
    asr = metrics.get("asr", {})
    head = "".join(f"<th>{html.escape(SYSTEM_LABELS.get(s, s))}</th>" for s in systems)
    rows = []
    for key, label, way in METRIC_ROWS:
        arrow = {"up": " &uarr;", "down": " &darr;", "one": " (1 is best)"}.get(way, "")
        best = _better(key, way, summary.get("base", {}).get(key), summary.get("sft", {}).get(key))
        cells = []
        for s in systems:
            value = summary[s].get(key)
            text = _fmt(value, key)
            if value is None and key in ("cer", "wer", "error_rate") and asr.get("status") != "ok":
                text = "skipped"
            cls = ' class="best"' if s == best else ""
            cells.append(f"<td{cls}>{text}</td>")
        rows.append(f"<tr><th class='label'>{html.escape(label)}{arrow}</th>{''.join(cells)}</tr>")
    return f"<table class='metrics'><tr><th>Metric</th>{head}</tr>{''.join(rows)}</table>"


def _audio(src: str, exp_dir: Path, embed: bool) -> str:
    if embed:
        src = _data_uri(exp_dir / src, "audio/wav")
    return f"<audio controls preload='none' src='{html.escape(src, quote=True)}'></audio>"


def utterance_table(metrics: Dict, exp_dir: Path, embed_audio: bool) -> str:
    systems = [s for s in ("real", "base", "sft") if s in metrics["summary"]]
    head = "".join(f"<th>{html.escape(SYSTEM_LABELS.get(s, s))}</th>" for s in systems)
    rows = []
    for row in metrics["utterances"]:
        cells = []
        for s in systems:
            entry = row.get(s)
            if entry is None:
                cells.append("<td>n/a</td>")
                continue
            facts = [f"{entry['seconds']:.2f} s"]
            if entry.get("sim_centroid") is not None:
                facts.append(f"SIM {entry['sim_centroid']:.3f}")
            if entry.get("sim_real") is not None:
                facts.append(f"same-text SIM {entry['sim_real']:.3f}")
            if s != "real" and entry.get("duration_ratio") is not None:
                facts.append(f"duration x{entry['duration_ratio']:.2f}")
            if entry.get("errors"):
                err = entry["errors"]
                name = "CER" if err["unit"] == "char" else "WER"
                facts.append(f"{name} {_fmt(err['rate'], 'rate')}")
            transcript = ""
            if "transcript" in entry:
                transcript = f"<div class='asr'>ASR: {html.escape(entry['transcript']) or '(nothing)'}</div>"
            cells.append(f"<td>{_audio(entry['wav'], exp_dir, embed_audio)}"
                         f"<div class='facts'>{html.escape(' · '.join(facts))}</div>{transcript}</td>")
        rows.append(f"<tr><td class='text'><b>{html.escape(row['utt'])}</b><br>{html.escape(row['text'])}</td>"
                    f"{''.join(cells)}</tr>")
    return f"<table class='utts'><tr><th>Text</th>{head}</tr>{''.join(rows)}</table>"


def speakers_section(metrics: Dict) -> str:
    """Per-speaker metric tables and the speaker separation check (a run of several speakers), else ''."""
    speakers = metrics.get("speakers") or {}
    if len(speakers) < 2:
        return ""
    e = html.escape
    parts = ["<h2>Per speaker</h2>"]
    for spk, info in speakers.items():
        prompt = info.get("prompt") or {}
        parts.append(f"<h3>Speaker {e(spk)}</h3><p class='note'>{len(info.get('utts', []))} test text(s); the base "
                     f"model's zero-shot prompt: {e(prompt.get('utt', ''))} (\u201c{e(prompt.get('text', ''))}"
                     f"\u201d)</p>")
        parts.append(metrics_table({"summary": info["summary"], "asr": metrics.get("asr", {})}))
    separation = metrics.get("separation") or {}
    if separation:
        names = list(speakers)
        parts.append("<h3>Speaker separation</h3><p class='note'>Mean speaker similarity (CAM++ cosine) of each "
                     "speaker's synthesized clips to the centroid of every speaker's real test clips. Each row "
                     "should be highest in its own column: A's outputs closer to A's real clips than to B's.</p>")
        for system in ("sft", "base"):
            if system not in separation:
                continue
            head = "".join(f"<th>to {e(n)}'s real clips</th>" for n in names)
            rows = []
            for spk in names:
                row = separation[system]["speakers"].get(spk, {})
                cells = []
                for other in names:
                    value = (row.get("sim") or {}).get(other)
                    cls = " class='best'" if other == row.get("closest") else ""
                    cells.append(f"<td{cls}>{_fmt(value)}</td>")
                verdict = "yes" if row.get("ok") else f"no: closest to {e(str(row.get('closest')))}"
                rows.append(f"<tr><th class='label'>{e(spk)}'s clips</th>{''.join(cells)}<td>{verdict}</td></tr>")
            label = SYSTEM_LABELS.get(system, system)
            ok = "every speaker is closest to itself" if separation[system]["ok"] else "<b>not separated</b>"
            parts.append(f"<p class='note'>{e(label)}: {ok}</p><table class='metrics'><tr><th>Clips</th>{head}"
                         f"<th>Closest to its own?</th></tr>{''.join(rows)}</table>")
    return "".join(parts)


def finetune_section(training: Dict) -> str:
    """The fine-tuning facts of each trained model (full vs LoRA: parameters, checkpoint size, speed, memory)."""
    rows = []
    for name, info in training.items():
        f = info.get("facts") or {}
        if not any(v is not None for v in f.values()):
            continue
        params = ("n/a" if f.get("trainable_parameters") is None else
                  f"{f['trainable_parameters'] / 1e6:.2f}M of {f['parameters'] / 1e6:.2f}M")
        size = "n/a" if f.get("checkpoint_mb") is None else f"{f['checkpoint_mb']:.2f} MB"
        step = "n/a" if f.get("step_s") is None else f"{f['step_s']:.3g} s"
        memory = "n/a" if f.get("peak_memory_mb") is None else f"{f['peak_memory_mb']:.0f} MB"
        rows.append(f"<tr><th class='label'>{html.escape(name)}</th><td>{html.escape(str(f.get('finetune')))}</td>"
                    f"<td>{params}</td><td>{size}</td><td>{step}</td><td>{memory}</td></tr>")
    if not rows:
        return ""
    return ("<h2>Fine-tuning</h2><table class='metrics'><tr><th>Model</th><th>Fine-tuning</th><th>Trainable "
            "parameters</th><th>One checkpoint</th><th>Seconds per update (median)</th><th>Peak memory</th></tr>"
            + "".join(rows) + "</table><p class='note'>Full fine-tuning trains every weight; LoRA trains small "
            "adapters on the frozen model (README: Which fine-tuning to choose).</p>")


STYLE = """
body { font-family: -apple-system, 'Segoe UI', Roboto, 'Noto Sans', 'Noto Sans CJK SC', sans-serif; margin: 24px;
       color: #222; max-width: 1240px; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 5px 8px; vertical-align: top; font-size: 13px; }
th { background: #f3f3f3; } th.label { text-align: left; font-weight: normal; background: #fafafa; }
table.metrics td { text-align: right; min-width: 150px; } td.best { font-weight: bold; background: #e8f5e9; }
table.utts td.text { max-width: 260px; } audio { width: 250px; height: 32px; }
.facts { color: #555; font-size: 12px; margin-top: 2px; } .asr { color: #777; font-size: 12px; font-style: italic; }
.note { color: #555; font-size: 13px; } img { max-width: 100%; border: 1px solid #eee; margin: 6px 0; }
.warn { color: #a04000; }
.banner { background: #fff3cd; border: 1px solid #e0b252; padding: 10px 14px; font-size: 14px; }
"""


def render_html(metrics: Dict, exp_dir: Path, summary_plot: Optional[Path], plots: List[Tuple[str, Path]],
                embed_audio: bool, missing_training: List[str]) -> str:
    e = html.escape
    asr = metrics.get("asr", {})
    if asr.get("status") == "ok":
        asr_line = f"ASR: {e(asr.get('backend', ''))} model {e(asr.get('model_dir', ''))}"
    else:
        asr_line = f"<span class='warn'>CER/WER skipped: {e(asr.get('reason', 'no ASR'))}</span>"
    prompt = metrics.get("prompt") or {}
    info = [f"Speaker <b>{e(metrics.get('speaker', ''))}</b>, {len(metrics['utterances'])} held-out test "
            f"text(s) from {e(metrics.get('test_data_dir', ''))}",
            f"Base model: {e(metrics.get('pretrained_model_dir', ''))}, zero-shot from the training clip "
            f"{e(prompt.get('utt', ''))} (\u201c{e(prompt.get('text', ''))}\u201d)",
            f"Fine-tuned model: {e(metrics.get('model_dir', ''))}"
            + (f" with the character(s) {e(', '.join(metrics['characters']))}" if metrics.get("characters") else "")
            + f", SFT speaker {e(metrics.get('speaker', ''))}",
            asr_line,
            f"Generated {e(metrics.get('created', ''))}"]
    version = get_version(metrics.get("model_version") or "cosyvoice2")  # metrics written before v3 lack it
    model_title, family = version.title, class_name(version)
    stand_in = [name for name, key in (("base", "base"), ("fine-tuned", "sft"))
                 if (metrics.get("stand_in") or {}).get(key)]
    banner = ""
    if stand_in:
        banner = ("<p class='banner'>The " + " and the ".join(stand_in) + " model " + ("are" if len(stand_in) > 1 else
                  "is") + f" the tiny random <b>stand-in</b> (tools/make_tiny_pretrained.py), not {e(model_title)}: "
                  "its audio is noise and these figures say nothing about voice quality. They only show that the "
                  "recipe ran. Fine-tune the real model for real results (README: The pretrained model).</p>")
    plot_html = "".join(f"<h3>{e(title)}</h3><img alt='{e(title)}' src='{_data_uri(path, 'image/png')}'>"
                        for title, path in plots)
    if missing_training:
        plot_html += "".join(f"<p class='note'>No training logs in {e(d)}.</p>" for d in missing_training)
    bars = f"<img alt='base vs fine-tuned' src='{_data_uri(summary_plot, 'image/png')}'>" if summary_plot else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Fine-tuning report: {e(metrics.get('speaker', ''))}</title>
<style>{STYLE}</style></head>
<body>
<h1>{e(family)} fine-tuning report: speaker {e(metrics.get('speaker', ''))}</h1>
{banner}
<p class="note">{'<br>'.join(info)}</p>
<h2>Metrics: base vs fine-tuned</h2>
{metrics_table(metrics)}
{bars}
<p class="note">Bold: the better of base and fine-tuned. SIM of the real recordings is to the centroid of the other
real test clips; their CER/WER is the ASR model's own error, the floor for the others. CER scores texts holding
Chinese by characters; WER scores the others by words; both ignore case and punctuation.</p>
{speakers_section(metrics)}
<h2>Listen: real / base / fine-tuned</h2>
{utterance_table(metrics, exp_dir, embed_audio)}
{finetune_section(metrics.get('training') or {})}
<h2>Training curves</h2>
{plot_html or '<p class="note">No training logs found.</p>'}
</body></html>
"""


def relative_paths(metrics: Dict, exp_dir: Path) -> Dict:
    """A copy of ``metrics`` whose wav paths are relative to ``exp_dir`` (posix style)."""
    out = json.loads(json.dumps(metrics))
    for row in out["utterances"]:
        for s in ("real", "base", "sft"):
            if s in row and os.path.isabs(row[s]["wav"]):
                row[s]["wav"] = Path(os.path.relpath(row[s]["wav"], exp_dir)).as_posix()
    return out


def write_report(exp_dir, metrics: Dict, train_dirs: Sequence = (), embed_audio: bool = False) -> Path:
    """Write ``<exp_dir>/metrics.json``, ``<exp_dir>/report_plots/*.png`` and ``<exp_dir>/report.html``.

    ``metrics``: the evaluation (see :mod:`cosyvoice.eval.runner`); wav paths may be absolute or relative to
    ``exp_dir`` and must lie under it unless ``embed_audio``. Returns the report's path."""

    exp_dir = Path(exp_dir)
    exp_dir.mkdir(parents=True, exist_ok=True)
    metrics = relative_paths(metrics, exp_dir)
    metrics.setdefault("created", datetime.datetime.now().isoformat(timespec="seconds"))
    plots: List[Tuple[str, Path]] = []
    summary_plot = exp_dir / PLOTS_DIR / "summary.png"
    if not plot_summary(metrics["summary"], summary_plot):
        summary_plot = None
    training, missing = {}, []
    for d in train_dirs:
        found = collect_training(d)
        if found is None:
            missing.append(str(d))
            continue
        training[found["name"]] = {"dir": found["dir"], "epochs": found["records"], "facts": training_facts(found)}
        png = exp_dir / PLOTS_DIR / f"{found['name']}_curves.png"
        if plot_training(found, png):
            plots.append((f"Training: {found['name']}", png))
    metrics["training"] = training
    atomic_write_text(exp_dir / METRICS_FILE, json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    page = render_html(metrics, exp_dir, summary_plot, plots, embed_audio, missing)
    atomic_write_text(exp_dir / REPORT_FILE, page)
    logger.info("wrote %s (%d training plot(s)) and %s", exp_dir / REPORT_FILE, len(plots), exp_dir / METRICS_FILE)
    return exp_dir / REPORT_FILE
