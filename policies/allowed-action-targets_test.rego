package aios.library["allowed-action-targets"]

import rego.v1

targets := {"targets": {
	"webhook": ["https://alerts.city.example/*"],
	"mqtt": ["city/*/street-cleaning/*"],
}}

action(type, target) := {"kind": "Action", "action": {"name": "a", "type": type, "target": target}}

test_listed_targets_pass if {
	count(violation) == 0 with input as action("webhook", "https://alerts.city.example/hooks/aq")
		with data.aios.params as targets
	count(violation) == 0 with input as action("mqtt", "city/district-7/street-cleaning/dispatch")
		with data.aios.params as targets
}

test_unlisted_target_is_a_violation if {
	violation == {"action \"a\" may not reach webhook target \"https://evil.example/x\""} with input as action("webhook", "https://evil.example/x")
		with data.aios.params as targets
}

test_unlisted_type_reaches_nothing if {
	count(violation) == 1 with input as action("kafka", "aios.x") with data.aios.params as targets
	count(violation) == 1 with input as action("webhook", "https://alerts.city.example/x")
}

test_intent_actions_are_checked if {
	intent := {"kind": "AutomationIntent", "object": {"spec": {"actions": [
		{"name": "ok", "type": "webhook", "target": "https://alerts.city.example/a"},
		{"name": "bad", "type": "mqtt", "target": "factory/valve"},
	]}}}
	violation == {"action \"bad\" may not reach mqtt target \"factory/valve\""} with input as intent
		with data.aios.params as targets
}
