"""Generative models. Each file holds one architecture; all implement `base.GANSystem`."""
