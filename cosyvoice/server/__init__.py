"""The speech server: an OpenAI-compatible HTTP API over one loaded CosyVoice2 (see cosyvoice.bin.serve)."""
