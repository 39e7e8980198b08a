"""The client: `labctl`'s commands, the part a user types (the docker CLI's role).

Argument parsing only: every command calls into the layers below (images, containers, network, the
kernel primitives) and prints what they return. When step 11's daemon runs, these commands become its
REST clients, as `docker` is dockerd's.

One module per command group, each with its parsers beside its commands:
  course.py      doctor, steps, step, check, tour, cleanup, prepare (the curriculum; no Docker counterpart)
  teaching.py    hint, progress, class (the hint ladder, the student's record, the solutions setting)
  lab.py         exercise, lab take|reset|status (the student's runtime, lab/mycontainer)
  cgroups.py     cgroup info|run (step 3)
  network.py     network ls|rm (step 6)
  images.py      import, images, rmi (step 4); login, pull, registry (step 5)
  build.py       build (step 12: a Dockerfile into an image, with a layer cache)
  containers.py  run, ps, logs, exec, stop, rm, inspect, stats, volume (step 7)
  runtime.py     bundle, runtime (step 10: an OCI bundle; labctl's OCI runtime, runc's command line)
  trace.py       trace (step 8)
  daemon.py      daemon [start|stop|status] (step 11: the REST API the commands are clients of)
  cluster.py     cluster up|down|status (step 13: lab hosts, each with a daemon, etcd as their store)
  jupyter.py     jupyter url|serve (the classroom VM's notebooks)
  parsing.py     what their parsers share
  main.py        main(): assembles the groups into one command line
"""
