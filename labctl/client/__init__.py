"""The client: `labctl`'s commands, the part a user types (the docker CLI's role).

Argument parsing only: every command calls into the layers below (images, containers, network, the
kernel primitives) and prints what they return. When step 11's daemon runs, these commands become its
REST clients, as `docker` is dockerd's.
"""
