"""Clients for the NeMo Microservices v1 APIs (Entity Store, Datastore, Customizer, Deployment Management)."""
