"""The package version, one level below everything so no module imports the package root."""

__version__ = "0.1.0"
