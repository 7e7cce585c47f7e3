"""Segmentation experiments: does synthetic data help a MONAI SegResNet? (design §2, §5).

recipe.py (the Auto3DSeg SegResNet recipe from MONAI parts), data.py (real and synthetic cases),
experiments.py (folds, leakage guard, resumable training, fold ensemble), evaluate.py (Dice,
DSCagg, HD95, experiment comparison). Nothing heavy is imported here.
"""
