"""Building images from a Dockerfile (`labctl build`): step 12, layers as a cache and as a diff.

One concern per module:
  dockerfile.py   a Dockerfile read into instructions (continuations, comments, exec and shell forms,
                  flags) and Docker's $VAR / ${VAR:-x} substitution; errors name the line
  context.py      the build context: .dockerignore, COPY sources kept inside it, the hash of what a
                  COPY or ADD brings (its cache key)
  files.py        COPY, ADD and WORKDIR written into a fresh upper directory (no container needed)
  runstep.py      RUN in a real step-7 container on an overlay; its upper directory is the layer
  diff.py         an OverlayFS upper directory -> a reproducible OCI layer tar (whiteouts, opaque
                  directories): step 4 read backwards
  cache.py        the layer cache, keyed as Docker's classic builder keys it (parent, instruction, content)
  instructions.py each instruction's effect on the image, and the cache around it
  image.py        the image being made: config, layers, history; committed per step, stored
  builder.py      build(): FROM to the tagged image in the store; BuildResult
"""
