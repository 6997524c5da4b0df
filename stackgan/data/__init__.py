"""Data sets: the built-in Shapes set (``shapes``) and loaders of image + caption data."""
