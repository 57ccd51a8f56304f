"""Networks shared by both stages: the ResNet encoder. The stage-specific networks live with their stage
(``custom.pretraining.heads`` / ``network``, ``custom.finetuning.dual_decoder``)."""
