"""Figures for the notebooks and demos: one module per topic, matplotlib imported inside each function.

Every figure has a title, axis labels with units, and the limit drawn as a line where there is one.
Each function takes data measured elsewhere (labctl.demos, the tracers, a PullLog) and returns a Figure.
Mechanism figures draw what the kernel reported: mounts.py (the mount tree around pivot_root),
overlay.overlay_stack, network.packet_path, tracing.build_order; what a figure says by colour it also
says in text or hatching, so it reads in grayscale.
"""
