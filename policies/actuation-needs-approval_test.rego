package aios.library["actuation-needs-approval"]

import rego.v1

intent(actions) := {"kind": "AutomationIntent", "object": {"spec": {"actions": actions}}}

action(type, approver) := {
	"kind": "Action",
	"action": {"name": "dispatch", "type": type, "target": "city/d7/cleaning", "approvalRequired": false},
	"approver": approver,
}

test_intent_mqtt_action_without_approval_is_a_violation if {
	violation == {"action \"dispatch\" (mqtt) must require a human approval"} with input as intent([
		{"name": "dispatch", "type": "mqtt", "approval": {"required": false}},
		{"name": "notify", "type": "webhook"},
	])
}

test_intent_with_approval_passes if {
	count(violation) == 0 with input as intent([{"name": "d", "type": "mqtt", "approval": {"required": true}}])
}

test_action_without_approver_is_a_violation if {
	violation == {"mqtt action \"dispatch\" on \"city/d7/cleaning\" needs a human approval before it runs"} with input as action("mqtt", null)
	count(violation) == 1 with input as action("mqtt", "")
}

test_action_with_approver_passes if {
	count(violation) == 0 with input as action("mqtt", "alice")
}

test_parameters_choose_the_action_types if {
	count(violation) == 0 with input as action("mqtt", null) with data.aios.params as {"actionTypes": ["webhook"]}
	count(violation) == 1 with input as action("webhook", null) with data.aios.params as {"actionTypes": ["webhook"]}
}

test_an_action_that_waits_for_approval_passes_before_the_approval if {
	waiting := json.patch(action("mqtt", null), [{"op": "replace", "path": "/action/approvalRequired", "value": true}])
	count(violation) == 0 with input as waiting
}
