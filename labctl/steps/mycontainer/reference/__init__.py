"""The reference version of each part of the student's runtime (lab/mycontainer): `labctl lab take N`
copies step N's into lab/mycontainer. Files, not modules of labctl: they import lab/mycontainer/libc.py."""
