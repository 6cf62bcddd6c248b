"""Vote: judge backends, the answer cache and the vote stage."""
