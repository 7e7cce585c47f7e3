"""synthct: synthetic head-and-neck CT image + tumour-mask pairs you can measure and trust."""

__version__ = "0.2.0"
