"""gankit: the shared lab library of the GAN course.

Notebooks import from here and stay thin. Nothing in this package touches a GPU, the network or
the disk at import time: the device is chosen when `pick_device` is called, data is fetched when
`gankit.data.fetch` is called.
"""
from gankit.device import pick_device, describe_device
from gankit.seeding import seed_everything

__version__ = "0.1.0"
__all__ = ["pick_device", "describe_device", "seed_everything", "__version__"]
