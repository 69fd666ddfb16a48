"""Task YAMLs (packaged as data)."""
