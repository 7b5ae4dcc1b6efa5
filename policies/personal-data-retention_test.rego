package aios.library["personal-data-retention"]

import rego.v1

intent(personal, days, hours) := {"kind": "AutomationIntent", "object": {"spec": {
	"dataPolicy": {"personalData": personal, "retentionDays": days},
	"topics": {"retentionHours": hours},
}}}

test_within_the_cap_passes if {
	count(violation) == 0 with input as intent(true, 30, 720)
}

test_longer_retention_is_a_violation if {
	violation == {
		"personal data may be kept at most 30 days, not 365",
		"topics holding personal data may keep it at most 720 hours, not 8760",
	} with input as intent(true, 365, 8760)
}

test_missing_retention_is_a_violation if {
	violation == {"personal data needs a retention of at most 30 days"} with input as {
		"kind": "AutomationIntent",
		"object": {"spec": {"dataPolicy": {"personalData": true}}},
	}
}

test_non_personal_data_is_not_capped if {
	count(violation) == 0 with input as intent(false, 365, 8760)
}

test_cap_is_a_parameter_and_exposed if {
	max_retention_days == 7 with data.aios.params as {"maxDays": 7}
	max_retention_days == 30
	violation == {"personal data may be kept at most 7 days, not 30"} with input as intent(true, 30, 168)
		with data.aios.params as {"maxDays": 7}
}
