"""Offline training of the SDR supernet (DESIGN §4): SimSiam/BYOL baseline, Sinkhorn clustering,
data-aware progressive training with SiamKD, and BN calibration, behind `sdr train`.

See docs/TRAINING.md for the stages, the run directory and the shipped recipes.
"""
