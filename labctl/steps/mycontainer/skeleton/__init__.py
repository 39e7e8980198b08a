"""The skeleton of each part of the student's runtime, with its TODOs, as lab/mycontainer holds it in git:
`labctl lab reset N` copies step N's back. Files, not modules of labctl: they import lab/mycontainer/libc.py."""
