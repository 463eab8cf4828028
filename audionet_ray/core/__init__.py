"""What every stage uses: errors, log (messages and --log-level), storage (local folders and URIs
alike), ranking (the one definition of best and of the Pareto front), plots (drawing), and Ray's
seams (ray_setup, ray_private: every private Ray API, cluster). Imports nothing of the package but core."""
