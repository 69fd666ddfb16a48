"""Demo task YAMLs (synthetic SAKURA-format data for the embedded reference model)."""
