"""bagtrack auth service: users, roles, passwords, tokens, JWKS."""
