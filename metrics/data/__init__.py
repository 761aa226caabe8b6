"""Data files shipped with quantloop (emotional scenarios)."""
