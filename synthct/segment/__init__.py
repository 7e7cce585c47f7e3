"""Segmentation experiments: does synthetic data help a MONAI SegResNet?

recipe.py (the Auto3DSeg SegResNet recipe from MONAI parts), normalise.py (the template's CT
intensity normalisation, fitted per fold), cases.py (real and synthetic cases as `SegCase`s),
folds.py (centre-stratified folds, leakage guard), fold_training.py (one resumable fold),
experiments.py (the stages, fold ensemble on the test split), scores.py (Dice, DSCagg, HD95,
case bootstrap, the table of experiments), original_grid.py (HECKTOR 2022 per-class DSCagg on
each case's CT grid). Nothing heavy is imported here. Definitions: docs/segmentation.md.
"""
