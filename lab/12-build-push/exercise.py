#!/usr/bin/env python3
"""Step 12 exercise: step 4 read backwards. A container (or a RUN of `labctl build`) wrote into an
OverlayFS upper directory; turn that directory into an OCI layer, a tar another machine can apply on
top of the same lower layers and get the same tree the container saw.

Usage (as root):  labctl exercise 12 -- UPPER LAYER.tar
   e.g.           mkdir -p /tmp/l/etc /tmp/u /tmp/w /tmp/m && echo hi > /tmp/l/etc/motd
                  sudo mount -t overlay overlay -o lowerdir=/tmp/l,upperdir=/tmp/u,workdir=/tmp/w /tmp/m
                  sudo rm /tmp/m/etc/motd; sudo umount /tmp/m; ls -l /tmp/u/etc      # c--------- 0, 0 motd
                  sudo labctl exercise 12 -- /tmp/u /tmp/layer.tar && tar -tvf /tmp/layer.tar
Judge it with:    sudo labctl check 12

Complete the TODOs. The exercise stands on its own: nothing but Python's standard library (os, stat,
tarfile). README.md in this folder explains both formats of a deletion.
"""
import os
import stat
import sys
import tarfile

WHITEOUT_PREFIX = ".wh."          # the OCI image spec's names (layer.md, "Whiteouts")
OPAQUE_MARKER = ".wh..wh..opq"


def is_overlay_whiteout(st):
    """Whether `st` (an os.lstat result) is how OverlayFS records a deleted name in its upper directory."""
    # TODO 1: afterwards this is True exactly for OverlayFS's whiteouts, and False for every ordinary
    #         file, directory or symlink. The kernel document says what a whiteout is:
    #         Documentation/filesystems/overlayfs.rst, "whiteouts and opaque directories"; stat(2) says
    #         where a file's type and its device number are (st_mode, st_rdev); Python's stat module tests
    #         the type, os.major and os.minor split the number.
    return False


def is_overlay_opaque(path):
    """Whether the directory at `path` is opaque: it hides all the lower layers had in that directory."""
    # TODO 2: afterwards this is True for a directory that replaced a lower one (the container ran
    #         `rm -rf DIR; mkdir DIR`), False for one that merely holds new files. OverlayFS does not mark
    #         it by its type but by an extended attribute, in the "trusted." namespace (root only):
    #         overlayfs.rst, same section; xattr(7); os.listxattr and os.getxattr (do not follow symlinks).
    return False


def add_as_is(tar, path, name):
    """Given: add the file, directory or symlink at `path` to the tar as the entry `name`, with its type,
    mode, owner, mtime and (for a file) its content."""
    info = tar.gettarinfo(path, name)
    info.uname = info.gname = ""
    if info.isfile():
        with open(path, "rb") as f:
            tar.addfile(info, f)
    else:
        tar.addfile(info)


def write_layer(upper, out):
    """Write the layer tar `out` for the upper directory `upper`: entry names relative to it."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirs, files in os.walk(upper):
            dirs.sort()
            here = os.path.relpath(dirpath, upper)
            # TODO 3: afterwards, when this directory (`here`, not the upper directory itself) is opaque,
            #         the tar says so, so that applying the layer removes whatever the lower layers had in
            #         it before adding what this layer has. The OCI image spec, layer.md, "Opaque
            #         Whiteout": the entry's name and what it contains. tarfile.TarInfo, tar.addfile.
            for name in sorted(dirs + files):
                path = os.path.join(dirpath, name)
                entry = os.path.normpath(os.path.join(here, name))
                st = os.lstat(path)
                # TODO 4: afterwards a name the container deleted (a whiteout in the upper directory) is
                #         not copied as the device it is in the upper directory, which an OCI reader would
                #         unpack as a device: the tar holds what the OCI image spec uses for a deletion
                #         instead. layer.md, "Whiteouts": its name, where it sits, what it contains.
                add_as_is(tar, path, entry)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    upper, out = sys.argv[1], sys.argv[2]
    if not os.path.isdir(upper):
        sys.exit(f"{upper} is not a directory: give the overlay's upperdir")
    write_layer(upper, out)
    print(f"{out}: {len(tarfile.open(out).getnames())} entries")


if __name__ == "__main__":
    main()
