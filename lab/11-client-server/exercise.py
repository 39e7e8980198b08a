#!/usr/bin/env python3
"""Step 11 exercise: a Docker client in the standard library. It runs one container through the
daemon's REST API, with HTTP/1.1 written and read by hand over the daemon's Unix socket.

Usage (as root):  labctl exercise 11 -- SOCKET IMAGE COMMAND [ARGS...]
                  prints the container's ID, then its exit code; exits with that code
   e.g.           sudo labctl daemon start
                  sudo labctl exercise 11 -- /run/labctl/labctl.sock busybox sh -c 'echo hi; exit 3'
                  sudo tail /var/lib/labctl/daemon.log          the daemon's log: your requests, your PID
Judge it with:    sudo labctl check 11

Complete the TODOs. This step stands on its own (the daemon does the work: this is only its client);
it needs nothing but Python's standard library. README.md in this folder explains the protocol.
"""
import json
import socket
import sys


def connect(path):
    """A stream socket connected to the daemon's socket file at `path`."""
    # TODO 1: afterwards the returned socket is connected to `path`, and the daemon knows this process's
    #         PID (the kernel gives it SO_PEERCRED at connect). A Unix socket's address is a file's path:
    #         unix(7), "Address format"; Python's socket module, the family AF_UNIX, the type SOCK_STREAM.
    return None


def send_request(sock, method, url, body):
    """Send one HTTP/1.1 request: the request line, the headers, a blank line, the body (bytes)."""
    # TODO 2: afterwards the daemon has read one whole request and answers it (not 400): the request
    #         line "METHOD URL HTTP/1.1", then one header per line ("Name: value"), then an empty line,
    #         then the body. Lines end in CRLF. HTTP/1.1 requires a Host header (any name will do on a
    #         Unix socket); the body is JSON (Content-Type) and the server knows where it ends only by its
    #         Content-Length, in bytes. RFC 9112, sections 3 (request line), 5 (headers), 6.2.
    pass


def read_response(f):
    """Read one answer from `f` (a binary file over the socket): (status code, body bytes)."""
    # TODO 3: afterwards the whole answer is read, and no more: the status line ("HTTP/1.1 201 Created"),
    #         header lines up to an empty one, then the body as the headers frame it. With
    #         "Content-Length: N", exactly N bytes. With "Transfer-Encoding: chunked" (the daemon's answer
    #         to wait is, as it cannot know its length in advance): chunks, each a size line in hex, that
    #         many bytes, CRLF, until a chunk of size 0. With neither: no body, as a 204 (No Content)
    #         has none. HTTP/1.1 keeps the connection open after an answer: reading until the server
    #         closes would wait for ever. RFC 9112, sections 4, 6.3 (the body's length), 7.1.
    return 0, b""


def request(path, method, url, body=None):
    """Given: one request on a connection of its own; (status code, the answer's JSON, or None)."""
    sock = connect(path)
    if sock is None:
        sys.exit("connect() gave no socket: TODO 1")
    with sock, sock.makefile("rb") as f:
        send_request(sock, method, url, json.dumps(body).encode() if body is not None else b"")
        status, payload = read_response(f)
    try:
        return status, json.loads(payload) if payload.strip() else None
    except ValueError:
        return status, payload.decode(errors="replace")


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    path, image, command = sys.argv[1], sys.argv[2], sys.argv[3:]

    status, answer = request(path, "GET", "/_ping")        # given: is a daemon there? (200 and "OK")
    if status != 200:
        sys.exit(f"GET /_ping answered {status} {answer!r}: is a daemon listening on {path}? (TODOs 1 to 3)")

    # TODO 4: afterwards one container was made from IMAGE to run COMMAND, started, waited for and
    #         removed; its ID and then its exit code are printed, and this program exits with that code.
    #         The daemon's events show create, start, die (exitCode: COMMAND's) and destroy for it.
    #         Docker Engine API v1.41 (docs.docker.com/engine/api/v1.41/, "Container"):
    #           POST /containers/create   body {"Image": ..., "Cmd": [...]}  -> 201 {"Id": ...}
    #           POST /containers/{id}/start                                  -> 204
    #           POST /containers/{id}/wait   answered once it has exited    -> 200 {"StatusCode": N}
    #           DELETE /containers/{id}                                      -> 204
    #         Any other status: an error, whose answer says why in {"message": ...}; exit 1 with it.
    sys.exit("TODO 4: no container made yet")


if __name__ == "__main__":
    main()
