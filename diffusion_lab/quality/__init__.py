"""Sample-quality metrics: pure torch, no Lightning."""
