"""The daemon (dockerd's role): step 11 fills this layer.

A long-running server on a Unix socket, speaking a subset of the Docker Engine REST API, that manages
images, containers, networks and volumes through the same library the client commands call today.
"""
