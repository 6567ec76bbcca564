"""Datasets and what happens to images before a model sees them.

``dataset`` loads labeled folders and the MedSeg NIfTI release and makes seeded
k-fold splits, ``preprocess`` maps intensities (HU windows) to model input,
``augment`` perturbs training batches, and ``phantom`` draws a synthetic CT slice
with no patient data.
"""
