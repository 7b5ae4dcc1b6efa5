"""The edge agent (``aios-edge``): ingest, filter, anonymise, buffer on disk, forward to Kafka.

It runs on a gateway with little CPU and a flaky uplink, so it depends on ``aios.api``
(pydantic), numpy, confluent-kafka, paho-mqtt, prometheus-client and OpenTelemetry's SDK
(its spans, exported only where an endpoint is set) only, and needs nothing
but Kafka to be configured: see :mod:`aios.edge.protocol` for the Kafka contract.
"""
