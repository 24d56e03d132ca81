"""Activation: per-profile metrics (derived traits), segments and their
downstream delivery through the consent gate. Metrics hold numbers only."""
