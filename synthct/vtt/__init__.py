"""Visual Turing Test: study design and sealing (design.py), one rendering pipeline for real and
synthetic cases (render.py), the rater flow behind the rating page (flow.py), the statistics
(stats.py) and what researchers read about studies in the CLI and the app (results.py).
Persistence is in `db/`; nothing here imports Streamlit."""

from synthct.errors import SynthctError


class StudyError(SynthctError):
    """A study, rater or rating request that cannot be honoured (message says why)."""


class TamperedStudyError(StudyError):
    """The sealed manifest or a rendered case no longer matches the hash recorded at creation."""


class AlreadyAnsweredError(StudyError):
    """A rater tried to answer the same case twice."""
