"""Reports of sweeps: the paper's tables and figures from a sweep directory."""
