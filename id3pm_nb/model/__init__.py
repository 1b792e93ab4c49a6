"""The paper's model: the ID-conditioned ADM U-Net, the Gaussian prior, the diffusion process, the samplers, the super-
resolution stage, and the bundle that carries a trained model from training to use."""
