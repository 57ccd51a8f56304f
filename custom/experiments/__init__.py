"""The paper's experiments: profiles, baselines, a resumable runner and its result tables (``python -m custom.experiments``)."""
