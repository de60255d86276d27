"""bulktag: tag and untag AWS resources in bulk, durably, at the Tagging API's ceiling."""

__version__ = "0.1.0"
