"""bagtrack's common library: what every service and the gateway would otherwise write again."""
