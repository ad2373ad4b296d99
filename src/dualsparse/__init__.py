"""dualsparse: recurrent language models that are sparse twice over.

Sparse activity from the event-based GRU (EGRU, Subramoney et al., ICLR 2023) and
sparse weights from global magnitude pruning (Mukherji et al., 2023).
"""

__version__ = "0.1.0"
