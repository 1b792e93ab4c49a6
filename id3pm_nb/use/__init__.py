"""Using a trained bundle: inversion of ID vectors (with queries to the black box), latent directions, the explorer,
and attribute-conditioned sampling."""
