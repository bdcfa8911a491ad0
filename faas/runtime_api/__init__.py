"""The Lambda Runtime API that environments call: one endpoint per environment."""
