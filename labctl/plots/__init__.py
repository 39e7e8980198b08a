"""Figures for the notebooks and demos: one module per topic, matplotlib imported inside each function.

Every figure has a title, axis labels with units, and the limit drawn as a line where there is one.
"""
