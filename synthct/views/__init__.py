"""Data views of the packed pairs: `VolumeView` (whole volumes) and `SliceView` (2D slices).

See `synthct.views.base` for what a view owns.
"""

from synthct.views.base import (
    VIEWS,
    DataView,
    Probe,
    TrainingData,
    mean_pairwise_distance,
    view_class,
)
from synthct.views.slices import SliceView
from synthct.views.volumes import VolumeView

VIEWS.update({VolumeView.name: VolumeView, SliceView.name: SliceView})

__all__ = [
    "DataView",
    "Probe",
    "SliceView",
    "TrainingData",
    "VolumeView",
    "mean_pairwise_distance",
    "view_class",
]
