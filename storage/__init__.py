"""Object stores and the study index."""
