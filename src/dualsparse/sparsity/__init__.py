"""Weight pruning, activity analysis and exact MAC accounting."""
