"""bagtrack billing service."""
