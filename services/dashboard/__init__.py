"""bagtrack dashboard service."""
