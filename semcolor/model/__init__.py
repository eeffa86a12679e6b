"""The dual-head network: config, encoder, decoders, heads, weights, checkpoints, losses, metrics, and the model
behind the inference core (:mod:`semcolor.model.inference`)."""
