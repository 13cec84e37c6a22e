"""Paper models, one file per paper family. Import the module you need, e.g. ``gankit.models.dcgan``."""
from gankit.models.dcgan import (
    DCGANConfig,
    Discriminator,
    Generator,
    discriminator_block,
    discriminator_loss,
    generator_block,
    generator_loss_minimax,
    generator_loss_non_saturating,
    train_dcgan,
    train_step,
    weights_init,
)

__all__ = [
    "DCGANConfig",
    "Discriminator",
    "Generator",
    "discriminator_block",
    "discriminator_loss",
    "generator_block",
    "generator_loss_minimax",
    "generator_loss_non_saturating",
    "train_dcgan",
    "train_step",
    "weights_init",
]
