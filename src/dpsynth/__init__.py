"""dpsynth: differentially private synthetic data, with the evidence of how private and how useful it is."""

__version__ = "0.1.0"
