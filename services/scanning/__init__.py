"""bagtrack scanning service."""
