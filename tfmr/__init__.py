"""tfmr: every concept of the Transformer, real and fast, in one readable PyTorch codebase."""
