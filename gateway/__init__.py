"""bagtrack API gateway: the only public entry; routes /api/v1/<area>/… to the owning service."""
