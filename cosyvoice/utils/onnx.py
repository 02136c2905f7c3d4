"""The two ONNX front-end models of CosyVoice2 and CosyVoice3: CAM++ speaker embedding and the speech tokenizer.

One wrapper each, shared by offline extraction (tools/extract_*.py), online training features and inference. The
models' inputs and outputs are looked up by position (inputs 0/1, output 0), never by name, so the official
``campplus.onnx`` / ``speech_tokenizer_v2.onnx`` / ``speech_tokenizer_v3.onnx`` (the same feed and output) and the
stand-in ones from tools/make_tiny_pretrained.py work alike.

* CAM++: input 0 float32 (1, T, 80) mean-normalised kaldi fbank of 16 kHz audio; output 0 has 192 values.
* Speech tokenizer: input 0 float32 (1, 128, T) whisper log-mel (100 frames/s), input 1 int32 (1,) = [T];
  output 0 holds the token ids (25 Hz, 0..6560). Audio must be at most 30 s.
"""
from __future__ import annotations

import os
import random
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from cosyvoice.utils.errors import UserError
from cosyvoice.audio.features import campplus_fbank, whisper_log_mel_spectrogram

SAMPLE_RATE = 16000              # both models read 16 kHz audio
MAX_TOKENIZER_SECONDS = 30       # the speech tokenizer's limit
MEL_FRAMES_PER_TOKEN = 4         # 100 mel frames/s -> 25 tokens/s
SAMPLES_PER_TOKEN = 640          # at 16 kHz: 40 ms


class AudioTooLongError(UserError, ValueError):
    """Audio longer than the speech tokenizer accepts."""


class OnnxModelError(UserError, ValueError):
    """An ONNX model file that onnxruntime cannot load (truncated or damaged download)."""


def open_session(model_path: str, providers: Optional[Sequence] = None, threads: int = 1):
    """An onnxruntime session with full graph optimisation and ``threads`` intra-op threads (CPU by default)."""
    import onnxruntime

    if not os.path.isfile(model_path):
        raise FileNotFoundError(f"ONNX model not found: {model_path} (it belongs in the pretrained model dir; "
                                "see tools/download_pretrained.py or tools/make_tiny_pretrained.py)")
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    try:
        return onnxruntime.InferenceSession(model_path, sess_options=options,
                                            providers=list(providers or ["CPUExecutionProvider"]))
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types (InvalidProtobuf, Fail, ...)
        reason = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
        size, where = os.path.getsize(model_path), os.path.dirname(os.path.abspath(model_path))
        raise OnnxModelError(
            f"{model_path} ({size} bytes) is not a loadable ONNX model: the file is damaged or truncated "
            f"({type(e).__name__}: {reason[:200]}); download it again (tools/download_pretrained.py --model_dir "
            f"{where}) or, for the stand-in, remake it (tools/make_tiny_pretrained.py --out_dir {where} --force)"
        ) from e


def _as_16k(speech: torch.Tensor) -> torch.Tensor:
    speech = torch.as_tensor(speech, dtype=torch.float32)
    return speech.reshape(1, -1) if speech.dim() == 1 else speech


class EmbeddingExtractor:
    """CAM++ speaker embedding of 16 kHz audio.

    ``extract(speech)`` -> (1, 192) float32, the front end's call; ``inference(speech)`` -> (192,), the online
    training feature, which first crops audio longer than ``max_seconds`` to a random window (python ``random``).
    """

    def __init__(self, model_path: str, max_seconds: float = 10.0, providers=None, threads: int = 1):
        self.model_path = model_path
        self.session = open_session(model_path, providers, threads)
        self.max_len = int(max_seconds * SAMPLE_RATE)

    def from_fbank(self, feat: torch.Tensor) -> List[float]:
        """(T, 80) mean-normalised fbank -> the 192 output values as a python list."""
        x = np.ascontiguousarray(torch.as_tensor(feat, dtype=torch.float32).unsqueeze(0).cpu().numpy())
        out = self.session.run(None, {self.session.get_inputs()[0].name: x})[0]
        return out.reshape(-1).astype(np.float32).tolist()

    def embed(self, speech: torch.Tensor) -> List[float]:
        """(1, T) or (T,) 16 kHz float audio -> 192 floats (whole clip, no crop)."""
        return self.from_fbank(campplus_fbank(_as_16k(speech)))

    def extract(self, speech: torch.Tensor) -> torch.Tensor:
        return torch.tensor([self.embed(speech)], dtype=torch.float32)

    def inference(self, speech: torch.Tensor, rng: Optional[random.Random] = None) -> torch.Tensor:
        speech = _as_16k(speech)
        if speech.shape[1] > self.max_len:
            start = (rng or random).randint(0, speech.shape[1] - self.max_len)
            speech = speech[:, start:start + self.max_len]
        return torch.tensor(self.embed(speech), dtype=torch.float32, device=speech.device)


class SpeechTokenizer:
    """Discrete speech tokens (25 Hz, ids 0..6560) of 16 kHz audio up to 30 s.

    ``tokenize(speech)`` -> python list of ids (ceil(T / 4) for T log-mel frames, T = samples // 160);
    ``extract(speech)`` -> (int32 (1, N), int32 (1,)) like the front end; ``inference(feat, feat_lengths, device)``
    tokenizes a padded batch of (B, T, 128) log-mels (online training).
    """

    def __init__(self, model_path: str, providers=None, threads: int = 1):
        self.model_path = model_path
        self.session = open_session(model_path, providers, threads)

    def from_log_mel(self, feat: torch.Tensor) -> List[int]:
        """(128, T) or (1, 128, T) whisper log-mel -> token ids."""
        feat = torch.as_tensor(feat, dtype=torch.float32)
        x = np.ascontiguousarray(feat.reshape(1, feat.shape[-2], feat.shape[-1]).cpu().numpy())
        inputs = self.session.get_inputs()
        out = self.session.run(None, {inputs[0].name: x, inputs[1].name: np.array([x.shape[2]], dtype=np.int32)})[0]
        return [int(t) for t in out.reshape(-1)]

    def tokenize(self, speech: torch.Tensor, pad_to_token_grid: bool = False) -> List[int]:
        """Token ids of (1, T) or (T,) 16 kHz audio.

        ``pad_to_token_grid``: first pad the audio with silence to a whole number of tokens (640 samples), so the
        clip gets exactly ceil(samples / 640) tokens: the count training assumes, since it pads the 24 kHz audio to
        whole tokens (960 samples) before taking 2 mel frames per token. Without it, a clip ending less than 10 ms
        into its last token gets one token fewer.
        """
        speech = _as_16k(speech)
        seconds = speech.shape[1] / SAMPLE_RATE
        if seconds > MAX_TOKENIZER_SECONDS:
            raise AudioTooLongError(f"speech tokenizer takes at most {MAX_TOKENIZER_SECONDS} s of audio, "
                                    f"got {seconds:.2f} s")
        pad = -speech.shape[1] % SAMPLES_PER_TOKEN if pad_to_token_grid else 0
        return self.from_log_mel(whisper_log_mel_spectrogram(speech, n_mels=128, padding=pad))

    def extract(self, speech: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.tensor([self.tokenize(speech)], dtype=torch.int32)
        return tokens, torch.tensor([tokens.shape[1]], dtype=torch.int32)

    def inference(self, feat: torch.Tensor, feat_lengths: torch.Tensor, device=None):
        """Padded (B, T, 128) log-mels and their (B,) lengths -> (B, N) int32 tokens (0-padded) and (B,) lengths.

        Token lengths are ceil(feat_len / 4), what the tokenizer gives one utterance (feat_len / 4 for the
        token-aligned features that training computes).
        """
        token_lengths = torch.div(feat_lengths + MEL_FRAMES_PER_TOKEN - 1, MEL_FRAMES_PER_TOKEN,
                                  rounding_mode="floor").to(torch.int32)
        tokens = torch.zeros(feat.shape[0], int(token_lengths.max()) if len(token_lengths) else 0, dtype=torch.int32)
        for i in range(feat.shape[0]):
            ids = self.from_log_mel(feat[i, :int(feat_lengths[i])].transpose(0, 1))[:int(token_lengths[i])]
            tokens[i, :len(ids)] = torch.tensor(ids, dtype=torch.int32)
        device = device if device is not None else feat.device
        return tokens.to(device), token_lengths.to(device)
