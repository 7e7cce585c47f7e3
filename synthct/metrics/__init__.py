"""Evaluation of synthetic sets: distances (FID/KID/PRDC/classifier-IS), diversity (MS-SSIM),
privacy (DCR), image/tumour statistics and 2-D embeddings, plus the feature extractors.

Metric functions are pure (features or arrays in, numbers out); extraction is separate
(`features`, `encoder`); `evaluate` ties them to a workspace.
"""
