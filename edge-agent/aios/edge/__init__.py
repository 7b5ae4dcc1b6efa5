"""The edge agent (``aios-edge``): ingest, filter, anonymise, buffer on disk, forward to Kafka.

It runs on a gateway with little CPU and a flaky uplink, so it depends on ``aios.api``
(pydantic), numpy, confluent-kafka, paho-mqtt and prometheus-client only, and needs nothing
but Kafka to be configured: see :mod:`aios.edge.protocol` for the Kafka contract.
"""
