"""Select: the cut and its reports."""
