# METADATA
# title: Retention of personal data
# description: >-
#   An AutomationIntent that handles personal data keeps it at most maxDays: its declared
#   retention and its topics' retention. The cap is also exposed as max_retention_days so
#   the intent's reconcile caps topic retention.
# custom:
#   parameters:
#     maxDays: longest retention of personal data in days (default 30)
package aios.library["personal-data-retention"]

import rego.v1

default configured := {}

configured := data.aios.params

params := object.union({"maxDays": 30}, configured)

max_retention_days := params.maxDays

personal if input.object.spec.dataPolicy.personalData == true

violation contains msg if {
	input.kind == "AutomationIntent"
	personal
	days := input.object.spec.dataPolicy.retentionDays
	days > params.maxDays
	msg := sprintf("personal data may be kept at most %d days, not %d", [params.maxDays, days])
}

violation contains msg if {
	input.kind == "AutomationIntent"
	personal
	not input.object.spec.dataPolicy.retentionDays
	msg := sprintf("personal data needs a retention of at most %d days", [params.maxDays])
}

violation contains msg if {
	input.kind == "AutomationIntent"
	personal
	hours := input.object.spec.topics.retentionHours
	hours > params.maxDays * 24
	msg := sprintf("topics holding personal data may keep it at most %d hours, not %d", [params.maxDays * 24, hours])
}
