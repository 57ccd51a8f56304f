"""Networks: the shared ResNet encoder, projection heads and the dual-decoder U-Net."""
