"""What pretends to be Kubernetes: an in-process API server that kubectl, kopf and the kubernetes client talk to."""
