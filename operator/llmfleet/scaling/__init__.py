"""Predictive and reactive scaling: metrics (Prometheus I/O), forecast and policy (pure), the HPA model."""
