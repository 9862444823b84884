"""Data processing pipeline (spec 4); see :mod:`training.preprocess.run`."""
