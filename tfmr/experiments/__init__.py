"""Experiments: small, CPU-sized studies that train several variants and plot them side by side."""
