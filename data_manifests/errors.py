class ManifestError(ValueError):
    """A manifest that cannot be read or written as its schema says; the message says why."""
