"""Sweeps: grids of ordinary runs (train → prune → measure), executed by a local
process pool or Ray, resumable, with results that ``dualsparse report`` turns into
the paper's tables and figures."""
