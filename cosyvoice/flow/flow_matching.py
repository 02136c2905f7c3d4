"""Conditional flow matching (CFM) around the U-Net estimator: training loss and the Euler ODE solver
with classifier-free guidance."""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

NOISE_SEED = 0  # the official code seeds 0 before drawing its fixed inference noise
NOISE_FRAMES = 50 * 300  # 300 s of 50 Hz mel frames


def _param(cfm_params: Any, name: str, default: Any = None) -> Any:
    """Read a field of ``cfm_params`` (a DictConfig, a dict or any attribute object)."""
    if isinstance(cfm_params, Mapping):
        value = cfm_params.get(name, default)
    else:
        value = getattr(cfm_params, name, default)
    if value is None:
        raise ValueError(f"cfm_params needs '{name}' (e.g. sigma_min, solver, t_scheduler, "
                         f"training_cfg_rate, inference_cfg_rate)")
    return value


class BASECFM(nn.Module):
    """Holds the flow-matching settings shared by the CFM variants (Matcha-TTS's base class)."""

    def __init__(self, n_feats: int, cfm_params: Any, n_spks: int = 1, spk_emb_dim: int = 128):
        super().__init__()
        self.n_feats = n_feats
        self.n_spks = n_spks
        self.spk_emb_dim = spk_emb_dim
        self.solver = _param(cfm_params, "solver")
        self.sigma_min = float(_param(cfm_params, "sigma_min", 1e-4))
        self.estimator = None


class ConditionalCFM(BASECFM):
    """CFM with a cosine (or linear) time schedule and classifier-free guidance.

    Training drops the conditions (mu, speaker, cond) of a ``training_cfg_rate`` share of the batch;
    inference mixes the conditioned and unconditioned vector fields as
    (1 + inference_cfg_rate) * v_cond - inference_cfg_rate * v_uncond.
    """

    def __init__(self, in_channels: int, cfm_params: Any, n_spks: int = 1, spk_emb_dim: int = 64,
                 estimator: Optional[nn.Module] = None):
        super().__init__(n_feats=in_channels, cfm_params=cfm_params, n_spks=n_spks, spk_emb_dim=spk_emb_dim)
        self.t_scheduler = _param(cfm_params, "t_scheduler")
        self.training_cfg_rate = float(_param(cfm_params, "training_cfg_rate"))
        self.inference_cfg_rate = float(_param(cfm_params, "inference_cfg_rate"))
        self.estimator = estimator

    def time_span(self, n_timesteps: int, like: torch.Tensor) -> torch.Tensor:
        t_span = torch.linspace(0, 1, n_timesteps + 1, device=like.device, dtype=like.dtype)
        if self.t_scheduler == "cosine":
            t_span = 1 - torch.cos(t_span * 0.5 * torch.pi)
        return t_span

    @torch.inference_mode()
    def forward(self, mu: torch.Tensor, mask: torch.Tensor, n_timesteps: int, temperature: float = 1.0,
                spks: Optional[torch.Tensor] = None, cond: Optional[torch.Tensor] = None, prompt_len: int = 0,
                cache: Optional[torch.Tensor] = None, streaming: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Sample mels from fresh noise (global RNG). ``cache`` (1, n_mels, C, 2) holds the noise and mu
        of the first C frames of a previous call to reuse; returns (mel, new cache of the prompt frames
        and the last 34 frames)."""
        z = torch.randn_like(mu) * temperature
        if cache is not None and cache.size(2) != 0:
            size = cache.size(2)
            z[:, :, :size] = cache[:, :, :, 0]
            mu = mu.clone()
            mu[:, :, :size] = cache[:, :, :, 1]
        overlap = 34
        z_cache = torch.cat([z[:, :, :prompt_len], z[:, :, -overlap:]], dim=2)
        mu_cache = torch.cat([mu[:, :, :prompt_len], mu[:, :, -overlap:]], dim=2)
        new_cache = torch.stack([z_cache, mu_cache], dim=-1)
        t_span = self.time_span(n_timesteps, mu)
        return self.solve_euler(z, t_span=t_span, mu=mu, mask=mask, spks=spks, cond=cond,
                                streaming=streaming), new_cache

    def solve_euler(self, x: torch.Tensor, t_span: torch.Tensor, mu: torch.Tensor, mask: torch.Tensor,
                    spks: Optional[torch.Tensor], cond: Optional[torch.Tensor], streaming: bool = False,
                    step_caches: Optional[List[dict]] = None, offset: int = 0) -> torch.Tensor:
        """Fixed-step Euler from t_span[0] to t_span[-1] with classifier-free guidance.

        Each step runs the estimator once on a doubled batch: the first half conditioned on
        (mu, spks, cond), the second half with those zeroed. ``step_caches`` (incremental streaming): one estimator
        cache per step; the frames are offset.. of a stream (see ``CausalConditionalDecoder.forward_chunk``).
        """
        if step_caches is not None and len(step_caches) != len(t_span) - 1:
            raise ValueError(f"solve_euler: {len(step_caches)} step caches for {len(t_span) - 1} Euler steps")
        dtype = spks.dtype if spks is not None else x.dtype
        batch = x.size(0)

        def doubled(cond_part: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
            if cond_part is None:
                return None
            cond_part = cond_part.to(dtype)
            return torch.cat([cond_part, torch.zeros_like(cond_part)], dim=0)

        mask_in = torch.cat([mask, mask], dim=0).to(dtype)
        mu_in, spks_in, cond_in = doubled(mu), doubled(spks), doubled(cond)
        t = t_span[0].unsqueeze(0)
        dt = t_span[1] - t_span[0]
        for step in range(1, len(t_span)):
            x_in = torch.cat([x, x], dim=0).to(dtype)
            t_in = t.to(dtype).expand(2 * batch)
            if step_caches is None:
                v = self.forward_estimator(x_in, mask_in, mu_in, t_in, spks_in, cond_in, streaming)
            else:
                v = self.estimator.forward_chunk(x_in, mu_in, t_in, spks_in, cond_in, offset, step_caches[step - 1])
            v_cond, v_uncond = torch.split(v, [batch, batch], dim=0)
            v = (1.0 + self.inference_cfg_rate) * v_cond - self.inference_cfg_rate * v_uncond
            x = x + dt * v
            t = t + dt
            if step < len(t_span) - 1:
                dt = t_span[step + 1] - t
        return x.float()

    def forward_estimator(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                          spks: Optional[torch.Tensor], cond: Optional[torch.Tensor],
                          streaming: bool = False) -> torch.Tensor:
        return self.estimator(x, mask, mu, t, spks, cond, streaming=streaming)

    def compute_loss(self, x1: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor,
                     spks: Optional[torch.Tensor] = None, cond: Optional[torch.Tensor] = None,
                     streaming: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Flow-matching loss for target mels x1 (B, n_mels, T) under mask (B, 1, T).

        Torch draws, in order: t = rand(B, 1, 1), z = randn_like(x1), then (if training_cfg_rate > 0)
        rand(B) for the condition drop. Returns (masked MSE per mel bin and valid frame, y).
        """
        b = mu.size(0)
        t = torch.rand([b, 1, 1], device=mu.device, dtype=mu.dtype)
        z = torch.randn_like(x1)
        y = (1 - (1 - self.sigma_min) * t) * z + t * x1
        u = x1 - (1 - self.sigma_min) * z
        if self.training_cfg_rate > 0:
            keep = torch.rand(b, device=x1.device) > self.training_cfg_rate
            mu = mu * keep.view(-1, 1, 1)
            spks = spks * keep.view(-1, 1) if spks is not None else None
            cond = cond * keep.view(-1, 1, 1) if cond is not None else None
        pred = self.estimator(y, mask, mu, t.squeeze(), spks, cond, streaming=streaming)
        loss = F.mse_loss(pred * mask, u * mask, reduction="sum") / (torch.sum(mask) * u.shape[1])
        return loss, y


def fixed_noise(n_mels: int, frames: int = NOISE_FRAMES, seed: int = NOISE_SEED) -> torch.Tensor:
    """The official fixed inference noise, (1, n_mels, frames) on the CPU, drawn from a private
    generator: the caller's global random state is left untouched."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randn([1, n_mels, frames], generator=gen, device="cpu", dtype=torch.float32)


class CausalConditionalCFM(ConditionalCFM):
    """CFM of CosyVoice2: inference starts from a fixed noise tensor (so streaming chunks agree with
    each other without a noise cache) and can use the estimator's streaming chunk masks."""

    def __init__(self, in_channels: int, cfm_params: Any, n_spks: int = 1, spk_emb_dim: int = 64,
                 estimator: Optional[nn.Module] = None):
        super().__init__(in_channels, cfm_params, n_spks, spk_emb_dim, estimator)
        n_mels = getattr(estimator, "out_channels", None)
        if n_mels is None:  # a DiT built without out_channels (its default): its mel_dim
            n_mels = getattr(estimator, "mel_dim", None)
        if not isinstance(n_mels, int):
            raise ValueError("CausalConditionalCFM needs an estimator with an integer out_channels (or mel_dim): "
                             "the number of mel bins, to size its fixed noise")
        # A plain attribute (not a buffer): it is not part of the checkpoint.
        self.rand_noise = fixed_noise(n_mels)

    @torch.inference_mode()
    def forward(self, mu: torch.Tensor, mask: torch.Tensor, n_timesteps: int, temperature: float = 1.0,
                spks: Optional[torch.Tensor] = None, cond: Optional[torch.Tensor] = None,
                streaming: bool = False, prompt_len: int = 0, cache: Optional[torch.Tensor] = None,
                offset: int = 0, step_caches: Optional[List[dict]] = None) -> Tuple[torch.Tensor, None]:
        """mu (B, n_mels, T), mask (B, 1, T), spks (B, spk_dim), cond (B, n_mels, T) -> (mel (B, n_mels, T), None).

        The noise is ``rand_noise[:, :, offset:offset+T]`` times ``temperature``. ``prompt_len`` and ``cache`` are
        accepted for interface compatibility with ``ConditionalCFM`` and not needed: the noise is fixed.
        ``step_caches``: incremental streaming of frames offset.. (see :meth:`solve_euler`).
        """
        frames = offset + mu.size(2)
        if frames > self.rand_noise.size(2):
            raise ValueError(f"CausalConditionalCFM: {frames} frames exceed the fixed noise length "
                             f"{self.rand_noise.size(2)}; synthesize shorter segments")
        z = self.rand_noise[:, :, offset:frames].to(device=mu.device, dtype=mu.dtype) * temperature
        z = z.expand(mu.size(0), -1, -1)
        t_span = self.time_span(n_timesteps, mu)
        return self.solve_euler(z, t_span=t_span, mu=mu, mask=mask, spks=spks, cond=cond, streaming=streaming,
                                step_caches=step_caches, offset=offset), None

    def forward_chunk(self, mu: torch.Tensor, spks: Optional[torch.Tensor], cond: Optional[torch.Tensor],
                      offset: int, caches: List[dict], n_timesteps: int = 10,
                      temperature: float = 1.0) -> torch.Tensor:
        """``forward(mu, ones mask, n_timesteps, streaming=True)`` for frames offset..offset+n-1 of a stream, with
        one estimator cache per Euler step in ``caches`` (updated in place; empty dicts when offset is 0)."""
        mask = torch.ones(mu.size(0), 1, mu.size(2), device=mu.device, dtype=mu.dtype)
        return self.forward(mu, mask, n_timesteps, temperature, spks, cond, streaming=True, offset=offset,
                            step_caches=caches)[0]
