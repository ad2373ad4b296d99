"""Event-driven batch-1 inference without PyTorch: the export format (``export``), the
compiled kernels (``kernels``, numba) and the streaming engine (``runtime``)."""
