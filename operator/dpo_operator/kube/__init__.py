"""Small helpers over the kubernetes client: the client itself, child objects, conditions, status writes."""
