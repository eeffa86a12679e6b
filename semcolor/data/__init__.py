"""Training data: pairs (listing, pairing, manifests, split), the Ray Data read pipeline, torch preprocessing and
the synthetic world."""
