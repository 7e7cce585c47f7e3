"""Data views of the packed pairs: `VolumeView` (whole volumes) and `SliceView` (2D slices).

See `synthct.views.base` for what a view owns.
"""

from synthct.views.base import DataView, Probe, TrainingData, mean_pairwise_distance
from synthct.views.slices import SliceView
from synthct.views.volumes import VolumeView

__all__ = [
    "DataView",
    "Probe",
    "SliceView",
    "TrainingData",
    "VolumeView",
    "mean_pairwise_distance",
]
