"""The intent runner: Kafka → inference → decision → durable hand-off of actions."""
