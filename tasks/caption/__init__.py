"""Caption: captioner backends and the caption stage."""
