"""EGRU, LSTM/GRU baselines, the AWD-style language model and its regularisers."""
