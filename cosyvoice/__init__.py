"""CosyVoice2 / CosyVoice3 fine-tuning toolkit: modules that load official CosyVoice2-0.5B and Fun-CosyVoice3-0.5B
checkpoints strictly."""
__version__ = "0.1.0"
