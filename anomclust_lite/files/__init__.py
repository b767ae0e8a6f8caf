"""File utilities (standard library and NumPy only): atomic writers, streaming SHA-256, the user cache folder."""
