{{/*
Alerts on what the operator, the data path and the edge fleet report; each names its
namespace and object, and says what to look at first. One list of rule groups, served as
a PrometheusRule (monitoring.prometheusRule) and as a plain rules file
(monitoring.alertRules). Called with the chart's root context.
*/}}
{{- define "aios.alertGroups" -}}
- name: aios-operator
  rules:
    - alert: AiosOperatorDown
      expr: max(up{job="{{ include "aios.fullname" $ }}", namespace="{{ $.Release.Namespace }}"}) == 0
      for: 5m
      labels: {severity: critical}
      annotations:
        summary: >-
          No replica of the aios operator answers its metrics scrape.
        description: >-
          {{`Nothing reconciles: new and changed aios objects wait. Look at the operator's pods in {{ $labels.namespace }}.`}}
    - alert: AiosReconcileErrors
      expr: |
        sum by (kind) (rate(aios_operator_reconcile_duration_seconds_count{outcome="error"}[10m]))
          / sum by (kind) (rate(aios_operator_reconcile_duration_seconds_count[10m])) > 0.1
      for: 15m
      labels: {severity: warning}
      annotations:
        summary: >-
          {{`More than a tenth of {{ $labels.kind }} reconciles fail.`}}
        description: >-
          {{`kubectl get {{ $labels.kind | toLower }} -A shows which are not Ready, and why.`}}
    - alert: AiosReconcileBacklog
      expr: max by (kind) (aios_operator_queue_depth) > 100
      for: 15m
      labels: {severity: warning}
      annotations:
        summary: >-
          {{`{{ $value }} {{ $labels.kind }} objects wait for a reconcile.`}}
        description: >-
          The operator falls behind; its CPU and the API server's latency are the usual causes.
    - alert: AiosAuditChainStalled
      expr: |
        max(aios_audit_events_pending) > 0
          and sum(increase(aios_audit_records_appended_total[5m])) == 0
      for: 5m
      labels: {severity: critical}
      annotations:
        summary: >-
          {{`{{ $value }} audit events wait, and the appender has chained none for 10 minutes.`}}
        description: >-
          Actions and approvals are recorded but not chained, so the trail a regulator verifies stops here. The operator's log says why its audit appender fails.
- name: aios-data-path
  rules:
    - alert: AiosDataPlaneTargetDown
      expr: up{job="{{ $.Release.Namespace }}/{{ include "aios.fullname" $ }}-data-plane"} == 0
      for: 5m
      labels: {severity: warning}
      annotations:
        summary: >-
          {{`{{ $labels.namespace }}/{{ $labels.pod }} does not answer its metrics scrape.`}}
        description: >-
          An intent runner, action worker or edge agent is down or unreachable.
    - alert: AiosModelUnavailable
      expr: min by (namespace, intent, model) (aios_runner_model_available) == 0
      for: 5m
      labels: {severity: warning}
      annotations:
        summary: >-
          {{`{{ $labels.intent }} cannot reach model {{ $labels.model }}.`}}
        description: >-
          Its readings are decided by the fallback rules; aiosctl explain md/NAME follows the model's chain.
    - alert: AiosDecisionsOnFallback
      expr: |
        sum by (namespace, intent) (rate(aios_runner_decisions_total{fallback="true"}[10m]))
          / sum by (namespace, intent) (rate(aios_runner_decisions_total[10m])) > 0.5
      for: 15m
      labels: {severity: warning}
      annotations:
        summary: >-
          {{`Most of {{ $labels.intent }}'s decisions come from its fallback rules.`}}
        description: >-
          The models answer too slowly, with too little confidence, or not at all (the reason label of aios_runner_decisions_total).
    - alert: AiosIntentPaused
      expr: max by (namespace, intent) (aios_runner_paused) == 1
      for: 10m
      labels: {severity: critical}
      annotations:
        summary: >-
          {{`{{ $labels.intent }} stopped consuming: its actions cannot be handed to Temporal.`}}
        description: >-
          Readings wait in Kafka (nothing is lost); Temporal or the audit trail is unreachable.
    - alert: AiosConsumerLagGrowing
      expr: |
        sum by (namespace, intent) (aios_runner_consumer_lag_records) > 1000
          and sum by (namespace, intent) (delta(aios_runner_consumer_lag_records[10m])) > 0
      for: 10m
      labels: {severity: warning}
      annotations:
        summary: >-
          {{`{{ $labels.intent }} falls behind: {{ $value }} readings wait.`}}
        description: >-
          Its runners decide slower than readings arrive; more replicas (spec.scaling) or faster models help.
    - alert: AiosDecisionLatencyHigh
      expr: |
        histogram_quantile(0.99, sum by (le, namespace, intent) (rate(aios_runner_decision_latency_seconds_bucket[10m]))) > 5
      for: 15m
      labels: {severity: warning}
      annotations:
        summary: >-
          {{`{{ $labels.intent }}'s p99 from reading to decision is {{ $value | humanizeDuration }}.`}}
        description: >-
          Lag, slow model calls (aios_runner_inference_duration_seconds) or a paused runner.
    - alert: AiosActionsFailing
      expr: sum by (namespace, activity_type) (rate(temporal_activity_execution_failed_total[10m])) > 0
      for: 15m
      labels: {severity: warning}
      annotations:
        summary: >-
          {{`Action steps {{ $labels.activity_type }} keep failing in {{ $labels.namespace }}.`}}
        description: >-
          The actions retry; the worker's log and the action's audit trail (aiosctl audit trace) say why.
- name: aios-edge
  rules:
    - alert: AiosEdgeBufferFilling
      expr: aios_edge_buffer_bytes / aios_edge_buffer_capacity_bytes > 0.8
      for: 10m
      labels: {severity: warning}
      annotations:
        summary: >-
          {{`Edge agent {{ $labels.pod }}'s buffer is {{ $value | humanizePercentage }} full.`}}
        description: >-
          Kafka does not take its readings; at full the overflow policy drops or refuses them.
    - alert: AiosGatewaySilent
      # The condition already spans three heartbeat periods: no "for" on top of it.
      expr: |
        time() - max by (gateway) (aios_edge_gateway_heartbeat_timestamp_seconds)
          > max by (gateway) (aios_edge_gateway_silent_after_seconds)
      labels: {severity: warning}
      annotations:
        summary: >-
          {{`Gateway {{ $labels.gateway }} has not reported for {{ $value | humanizeDuration }}.`}}
        description: >-
          Its agent is down or cut off from Kafka: its readings wait in its buffer, or are lost when that fills. kubectl get edgegateways -A shows when each was last seen.
    - alert: AiosPrivacyBudgetNearlySpent
      expr: min by (gateway) (aios_edge_gateway_privacy_budget_remaining_ratio) < 0.1
      for: 15m
      labels: {severity: warning}
      annotations:
        summary: >-
          {{`Gateway {{ $labels.gateway }} keeps spending its privacy budget per window: {{ $value | humanizePercentage }} left.`}}
        description: >-
          Aggregates past the budget are withheld. Fewer released values (a longer window) or a larger budgetPerWindow, if the data protection officer agrees.
    - alert: AiosPrivacyBudgetSpent
      expr: max by (gateway) (aios_edge_gateway_privacy_sensors_exhausted) > 0
      labels: {severity: warning}
      annotations:
        summary: >-
          {{`{{ $value }} sensors of gateway {{ $labels.gateway }} spent their lifetime privacy budget.`}}
        description: >-
          Their values are withheld until the budget period renews (differentialPrivacy.budgetPeriodSeconds).
    - alert: AiosEdgeDroppingReadings
      expr: increase(aios_edge_buffer_overflow_dropped_total[15m]) > 0
      labels: {severity: critical}
      annotations:
        summary: >-
          {{`Edge agent {{ $labels.pod }} dropped {{ $value }} readings: its buffer was full.`}}
        description: >-
          Readings are lost. Restore its link to Kafka, or give the gateway a bigger spec.buffer.maxBytes.
{{- end }}
