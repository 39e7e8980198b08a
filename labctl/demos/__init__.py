"""Demonstrations and measurements: experiments that show a primitive at work and time it.

The steps, the notebooks, the plots and bench/ use these; the library (client, daemon, images,
containers, network, runtime, kernel) never imports them.
  cgroups.py   step 3's experiments: an OOM kill, CPU throttling, a fork bomb held by pids.max
  overlay.py   step 4's measurements: copy-up cost, disk shared by containers of one image
  network.py   step 6's measurements: round trip and throughput over loopback and the bridge
  nettool.py   the lab's TCP tool (`python -m labctl.demos.nettool`): serve, rtt, throughput, whoami
  workload.py  step 8's workloads: a shell in namespaces to trace
  daemonrun.py step 11's: a private daemon, the requests it logged per client PID, a stdlib HTTP/1.1
               client that times create, start, wait and delete
  layerdiff.py step 12's check: an overlay changed as a RUN would, its merged view read from the kernel,
               a layer applied onto the lower layer by umoci
  buildpush.py step 12's demo: one Dockerfile built cold, cached and after one changed file; two pushes
               on one base, their blobs (exists, mounted, uploaded) and bytes sent
  multihost.py step 13's tools: two namespaces joined by VXLAN, pings, TCP streams, captures decoded
  clusterdemo.py step 13's demo: a server and a client container on two cluster hosts, one echo seen
               inside and on the underlay, a daemon killed and its endpoint's lease timed
"""
