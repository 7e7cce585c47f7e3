"""Benchmarks behind `synthct bench …`, one module per benchmark.

data (phantom generation, NIfTI reading and writing), preprocess (one case to a packed pair,
against the thesis's method), train (iterations/s, FLOPs and MFU of training iterations),
generate (sampling and writing speed; memory of `synthct generate` against `--n`), fid (the
stable FID against the `scipy.linalg.sqrtm` recipe; `synthct evaluate` end to end), segment
(seconds per SegResNet epoch), vtt (rating writes with concurrent raters). `blobs` holds the
tiny procedural pairs and sets the evaluation benchmark and the tests use; `machine` the header
that names the machine and date of a result.

Each module measures and returns figures; `synthct.commands.bench` prints them. Results, with
their machine and date, are recorded in docs/benchmarks.md. Nothing is imported here, so the
CLI can load this package without torch.
"""
