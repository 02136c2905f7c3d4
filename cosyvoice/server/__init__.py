"""The speech server: an OpenAI-compatible HTTP API over one loaded CosyVoice2 or CosyVoice3 (cosyvoice.bin.serve)."""
