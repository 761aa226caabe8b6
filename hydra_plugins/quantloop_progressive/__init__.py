"""quantloop's progressive Pass-1 sweeper for Hydra (``hydra/sweeper=progressive``)."""
