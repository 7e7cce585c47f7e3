"""Segmentation experiments: does synthetic data help a MONAI SegResNet? (design §2, §5).

recipe.py (the Auto3DSeg SegResNet recipe from MONAI parts), data.py (real and synthetic cases),
folds.py (centre-stratified folds, leakage guard), train.py (one resumable fold), experiments.py
(the stages, fold ensemble on the test split), evaluate.py (Dice, DSCagg, HD95, comparison). Nothing heavy is imported here.
"""
