"""Bandwidth forecasting: windows, baselines, LSTM, online accuracy, drift, retraining.

TensorFlow is imported lazily (:mod:`models.forecast.tfrt`), only when an LSTM is built.
"""
