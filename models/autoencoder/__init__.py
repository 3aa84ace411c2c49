"""LSTM autoencoder on consensus-latency windows (TensorFlow is imported lazily)."""
