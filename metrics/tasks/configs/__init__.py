"""Task YAMLs and their dataset loaders (a package so the files ship with the wheel)."""
