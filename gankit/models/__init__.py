"""Paper models, one file per paper family. Import the module you need, e.g. ``gankit.models.dcgan``."""
# Names several papers share (discriminator_loss, ...) stay DCGAN's here; CycleGAN's live in gankit.models.cyclegan.
from gankit.models.cyclegan import (
    CycleGANConfig,
    ImagePool,
    PatchDiscriminator,
    ResnetBlock,
    ResnetGenerator,
    linear_decay_lambda,
    load_official_state_dict,
)
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
# StarGAN's networks, losses and load_official_state_dict: import gankit.models.stargan.
from gankit.models.stargan import StarGANConfig, create_labels, label2onehot, random_target_labels

__all__ = [
    "CycleGANConfig",
    "ImagePool",
    "PatchDiscriminator",
    "ResnetBlock",
    "ResnetGenerator",
    "linear_decay_lambda",
    "load_official_state_dict",
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
    "StarGANConfig",
    "create_labels",
    "label2onehot",
    "random_target_labels",
]
