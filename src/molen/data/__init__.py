"""Data versions: files, directories and data frames identified by their content hash."""
