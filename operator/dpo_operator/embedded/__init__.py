"""Development stand-ins for what a cluster's nodes do (local executor, NIM stand-in, demo policy) and the demo."""
