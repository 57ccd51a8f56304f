"""IDEAL's semi-supervised fine-tuning (Fig. 2b): one shared encoder with two different U-Net decoders
(``dual_decoder``), the supervised and cross pseudo-label loss (``cross_pseudo``), the strong view of the
weak-to-strong branch (``strong_view``) and the fine-tuning step (``trainer``)."""
