"""Text frontend: normalization (numbers, dates, units) and sentence splitting before tokenization."""
from cosyvoice.text.normalizer import TextFrontend

__all__ = ["TextFrontend"]
