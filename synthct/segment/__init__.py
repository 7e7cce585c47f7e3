"""Segmentation experiments: does synthetic data help a MONAI SegResNet? (design §2, §5).

recipe.py (the Auto3DSeg SegResNet recipe from MONAI parts), normalise.py (the template's CT
intensity normalisation, fitted per fold), data.py (real and synthetic cases), folds.py
(centre-stratified folds, leakage guard), train.py (one resumable fold), experiments.py (the
stages, fold ensemble on the test split), evaluate.py (Dice, DSCagg, HD95, case bootstrap,
comparison), original_grid.py (HECKTOR 2022 per-class DSCagg on each case's CT grid). Nothing
heavy is imported here. Definitions: docs/segmentation.md.
"""
