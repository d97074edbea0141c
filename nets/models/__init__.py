"""The learned models, one module each; every module registers its class with ``nets.registry.register``."""
