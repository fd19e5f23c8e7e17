"""The package version, in a module of its own: submodules import it without the package."""

__version__ = "0.1.0"
