"""gankit: the shared lab library of the GAN course.

Notebooks import from here and stay thin. Nothing in this package touches a GPU, the network or
the disk at import time: the device is chosen when `pick_device` is called, data is fetched when
`gankit.data.fetch` is called.
"""
__version__ = "0.1.0"
__all__ = ["pick_device", "describe_device", "seed_everything", "__version__"]


def __getattr__(name: str):
    # Imported on first use, not with the package: torch takes seconds to import, and commands
    # that never train (`gankit runs`, the background supervisor) should answer at once.
    if name in ("pick_device", "describe_device"):
        from gankit import device
        return getattr(device, name)
    if name == "seed_everything":
        from gankit.seeding import seed_everything
        return seed_everything
    raise AttributeError(f"module 'gankit' has no attribute {name!r}")
