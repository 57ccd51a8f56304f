"""IDEAL on MONAI: components that MONAI lacks, used by the bundles in ``bundles/``.

Dense local contrastive pre-training and cross-pseudo-label fine-tuning
(Basak et al., ICASSP 2023), as MONAI transforms, networks, losses and Ignite workflows.
"""

__version__ = "0.1.0"
