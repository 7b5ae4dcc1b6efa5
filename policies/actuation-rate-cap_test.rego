package aios.library["actuation-rate-cap"]

import rego.v1

action(type, recent) := {
	"kind": "Action",
	"action": {"name": "dispatch", "type": type, "target": "city/d7"},
	"recentActuations": recent,
}

test_under_the_cap_passes if {
	count(violation) == 0 with input as action("mqtt", 3)
}

test_at_the_cap_is_a_violation if {
	violation == {"target \"city/d7\" was actuated 4 times in the last hour (cap 4)"} with input as action("mqtt", 4)
}

test_other_types_are_not_capped if {
	count(violation) == 0 with input as action("webhook", 100)
}

test_parameters_set_the_cap if {
	count(violation) == 1 with input as action("mqtt", 2) with data.aios.params as {"maxPerHour": 2}
	count(violation) == 0 with input as action("webhook", 2)
		with data.aios.params as {"maxPerHour": 2, "actionTypes": ["mqtt"]}
}

test_intent_actions_need_a_rate_limit_within_the_cap if {
	intent := {"kind": "AutomationIntent", "object": {"spec": {"actions": [
		{"name": "none", "type": "mqtt"},
		{"name": "high", "type": "mqtt", "rateLimit": {"perHour": 60}},
		{"name": "ok", "type": "mqtt", "rateLimit": {"perHour": 2}},
		{"name": "alert", "type": "webhook"},
	]}}}
	violation == {
		"action \"none\" needs a rate limit of at most 4 per hour",
		"action \"high\" needs a rate limit of at most 4 per hour",
	} with input as intent
}
