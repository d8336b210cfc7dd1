"""Thin trigger adapters, one Blueprint per trigger group. Logic lives in shared/."""
