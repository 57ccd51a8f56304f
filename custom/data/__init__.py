"""Data: built-in synthetic cardiac MRI, protocols, datalists and slice pipelines."""
