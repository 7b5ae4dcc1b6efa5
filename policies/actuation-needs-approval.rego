# METADATA
# title: Actuation needs human approval
# description: >-
#   Actions that move something in the street need a human approval: at admission every
#   such action of an AutomationIntent must require approval; at run time such an action
#   runs only if it waits for an approval or already has its approver.
# custom:
#   parameters:
#     actionTypes: action types that actuate (default [mqtt])
package aios.library["actuation-needs-approval"]

import rego.v1

default configured := {}

configured := data.aios.params

params := object.union({"actionTypes": ["mqtt"]}, configured)

violation contains msg if {
	input.kind == "AutomationIntent"
	some action in input.object.spec.actions
	action.type in params.actionTypes
	not object.get(action, ["approval", "required"], false)
	msg := sprintf("action %q (%s) must require a human approval", [action.name, action.type])
}

# At run time the action workflow asks twice: before it waits for the approval (the
# action declares approvalRequired) and after (with the approver). An action that would
# run with neither, e.g. of an intent admitted before this policy, is denied.
violation contains msg if {
	input.kind == "Action"
	input.action.type in params.actionTypes
	not object.get(input.action, "approvalRequired", false)
	not approved
	msg := sprintf("%s action %q on %q needs a human approval before it runs", [
		input.action.type, input.action.name, input.action.target,
	])
}

approved if {
	is_string(input.approver)
	input.approver != ""
}
