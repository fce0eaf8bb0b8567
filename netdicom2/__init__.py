"""netdicom2: the DICOM Upper Layer (PS3.8) service provider, sans-I/O core and threaded adapter."""

__version__ = "0.1.0"

__all__ = ["__version__"]
