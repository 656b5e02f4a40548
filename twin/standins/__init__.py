"""Stand-ins for the stack's controllers that cannot run here, each a process that talks to the real API server.

Every stand-in runs as the process of its component's Pod (started by twin/kubelet.py when KWOK reports the
container running), authenticates with that Pod's ServiceAccount token, lists and watches through the official
client, and keeps no store of its own beyond an informer cache. Why each real component does not run is written
at the top of its module and in twin/report.py (the twin's sign-off).
"""
