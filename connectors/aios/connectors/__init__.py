"""Connectors to the servers aios talks to: Kafka, MQTT, HTTP, inference, OPA, audit sinks."""
